"""The ``memberpulse`` command line: every command's arguments, help and defaults, in one parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_WEBHOOK_URL = "http://localhost:3000/api/webhooks/whop"
# `memberpulse sql` stops a query running longer than this (a cross join must not run for ever).
DEFAULT_TIMEOUT_SECONDS = 300.0


def _parse_as_of(text: str, flag: str = "--as-of") -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{flag} {text!r} is not an ISO 8601 time, e.g. 2026-11-27T12:00:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ≥ 0")
    return value


def _parse_since(text: str) -> datetime:
    return _parse_as_of(text, "--since")


def version() -> str:
    """The installed distribution's version: pyproject.toml is its one source."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("memberpulse")
    except PackageNotFoundError:  # imported from a checkout that was never installed
        return "unknown (not installed)"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default (none shown for flags and options without one)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, argparse.SUPPRESS) or isinstance(action, argparse._VersionAction):
            return action.help
        return super()._get_help_string(action)


Command = Callable[[str, str], argparse.ArgumentParser]


def _add_landing_commands(command: Command) -> None:
    serve = command("serve", "run the webhook landing endpoint")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=3000, help="TCP port to listen on")

    send = command("send-test", "sign a mock webhook with the configured secret and post it")
    send.add_argument("event", help="an event type (e.g. membership.went_valid) or 'all'")
    send.add_argument("--url", default=DEFAULT_WEBHOOK_URL, help="the landing endpoint to post to")
    send.add_argument(
        "--cacert",
        type=Path,
        default=None,
        metavar="PATH",
        help="trust the CA certificates in this PEM file for an https:// --url, e.g. Caddy's local root.crt "
        "(default: SSL_CERT_FILE if set, else the public CAs httpx trusts)",
    )
    send.add_argument(
        "--via-whop", action="store_true", help="ask Whop to send its own sample to the configured webhook instead"
    )


def _add_run_command(command: Command) -> None:
    run = command("run", "one reconcile run: ingest, score, publish, snapshot")
    run.add_argument("--as-of", type=_parse_as_of, default=None, help="score as of this ISO 8601 time (default: now)")
    run.add_argument("--full-refresh", action="store_true", help="rebuild from all raw data")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="ingest and score in memory, print the rows it would insert or update; commit, publish and write nothing",
    )
    run.add_argument("--limit", type=_non_negative, default=20, help="rows a --dry-run lists in its table")
    run.add_argument(
        "--format", choices=("table", "csv", "json"), default="table",
        help="how a --dry-run gives its rows: a table of --limit rows, or every row as csv or json on stdout",
    )  # fmt: skip
    run.add_argument("--json", action="store_true", help="print the run's report as one JSON object, no table")


def _add_analyst_commands(command: Command) -> None:
    report = command("report", "write the analysts' HTML report of the latest snapshot")
    report.add_argument(
        "--out", type=Path, default=None,
        help="where to write it (default: snapshots/report.html; with --company, snapshots/report-<companies>.html)",
    )  # fmt: skip
    _add_company(report, "report on this company only", "every chart and table is of their members; with more "
                 "than one, an index compares them")  # fmt: skip

    sql = command("sql", "run one read-only SQL query against the latest snapshot")
    sql.add_argument("query", help='e.g. "SELECT status, count(*) FROM member_activity GROUP BY ALL"')
    sql.add_argument(
        "--format",
        choices=("table", "csv", "json", "parquet"),
        default="table",
        help="table: up to 1000 rows as plain text, control and bidi characters escaped "
        r"(\x1b, \x00, \n, \u202e; a backslash shown as \\), long values folded, never cut; "
        "csv, json: every row exactly as DuckDB's COPY writes it, to standard output or --out; parquet: needs --out",
    )
    sql.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="write every row to FILE with DuckDB's COPY, replacing it atomically, in --format's format or else "
        "FILE's extension's (default: no file; csv and json go to standard output)",
    )
    sql.add_argument(
        "--timeout", type=_positive_seconds, default=DEFAULT_TIMEOUT_SECONDS, metavar="SECONDS",
        help="stop the query (exit 1) when it runs longer than this",
    )  # fmt: skip
    sql.add_argument(
        "--allow-files", action="store_true",
        help="let the query read files it names (read_csv, read_parquet ...); by default it reads only the snapshot",
    )  # fmt: skip
    _add_company(sql, "see only this company's rows", "every table and view is filtered to them (not with "
                 "--allow-files)")  # fmt: skip


def _add_company(parser: argparse.ArgumentParser, what: str, then: str) -> None:
    """``--company biz_…``, repeatable or comma-separated (``snapshot.parse_companies`` reads the values)."""
    parser.add_argument("--company", action="append", default=None, metavar="biz_…",
                        help=f"{what} (repeat it, or give several comma-separated): {then}")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memberpulse",
        description="Keep a Whop creator's member activity true, fresh and queryable.",
        epilog="exit codes: 0 ok, 1 failed, 2 fix your configuration, 3 transient failure (try again), "
        "130 interrupted, 141 standard output closed early (e.g. by | head)",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)

    _add_landing_commands(command)

    _add_run_command(command)

    backfill = command("backfill", "one backfill from Whop's REST API, every company side by side")
    backfill.add_argument(
        "--all", dest="all_companies", action="store_true", help="fetch every company, even when the last "
        "backfill's failures would make this one fetch only those",
    )  # fmt: skip
    _add_analyst_commands(command)

    recover = command("recover", "bring back webhooks the landing missed, from Whop's delivery log")
    recover.add_argument(
        "--since", type=_parse_since, default=None, help="read back to this ISO 8601 time (default: where the "
        "last recovery stopped, at most 30 days)",
    )  # fmt: skip
    recover.add_argument("--replay", action="store_true", help="ask Whop to re-send the failed deliveries instead")
    command("migrate", "apply supabase/migrations through SUPABASE_DB_URL")
    command("demo", "the whole loop on this machine, no credentials needed")
    return parser
