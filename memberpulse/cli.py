"""The ``memberpulse`` console script.

Exit codes (``memberpulse.errors.ExitCode``): 0 success; 1 the job ran and failed (e.g. send-test got a
non-200); 2 bad usage or configuration (a person must fix something); 3 a transient failure (retrying later
may succeed); 141 standard output closed early (``memberpulse sql ... | head``), quietly. An error that stops a
command carries its code (``exit_code``); :func:`main` maps it, here only.
Each subcommand imports its stage lazily so ``memberpulse send-test`` does not pay for Prefect's import.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from memberpulse.errors import ExitCode, MemberpulseError, OutputClosed
from memberpulse.settings import Settings, load_settings

DEFAULT_WEBHOOK_URL = "http://localhost:3000/api/webhooks/whop"


def quiet_prefect() -> None:
    """Keep Prefect's own chatter (engine start-up, ephemeral server) out of a CLI run; our lines stay.

    Prefect reads its settings from the environment when it is first imported, so this runs before any flow
    is imported. Each value is only a default: the environment still wins.
    """
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    # The ephemeral Prefect server inherits the environment; its telemetry only adds SQLite lock contention.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # ...and the client's own usage reporting, whose first-run notice would land inside a progress bar.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # The ephemeral API starts in a subprocess and migrates its SQLite database on first use; on a busy
    # 2-core machine that can take longer than Prefect's default 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    logging.getLogger("prefect").setLevel(logging.WARNING)


def _parse_as_of(text: str, flag: str = "--as-of") -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{flag} {text!r} is not an ISO 8601 time, e.g. 2026-11-27T12:00:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


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
    report.add_argument("--out", type=Path, default=None, help="where to write it (default: snapshots/report.html)")

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

    command("backfill", "one backfill flow run from Whop's REST API")
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


# Commands that read or write the data dir say which one on stderr once they succeeded, so an error stays one
# line and stdout stays the data (``run`` says it in its summary, ``serve`` in its "Listening" line).
_DATA_DIR_SHOWN = ("backfill", "recover", "report", "sql", "demo")


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    code = _run_command(args, settings)
    if code == ExitCode.OK and args.command in _DATA_DIR_SHOWN and settings.log_level in ("DEBUG", "INFO"):
        print(f"memberpulse {args.command}: data dir {settings.data_dir.resolve()}", file=sys.stderr)
    return code


def _run_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.command in ("run", "backfill", "demo"):
        quiet_prefect()  # before anything imports Prefect: it reads its settings once, at import
    if args.command == "serve":
        from memberpulse.landing.server import serve

        serve(settings, host=args.host, port=args.port)
        return ExitCode.OK
    if args.command == "send-test" and args.via_whop:
        from memberpulse.flows.recover import send_test_via_whop

        return send_test_via_whop(args.event, settings=settings)
    if args.command == "send-test":
        from memberpulse.landing.send_test import send_test

        return send_test(args.event, url=args.url, settings=settings, cacert=args.cacert)
    if args.command == "recover":
        from memberpulse.flows.recover import run_once as recover_once

        return recover_once(settings, since=args.since, replay=args.replay)
    if args.command == "run":
        from memberpulse.flows.reconcile import run_once

        options = {"rows_format": args.format, "limit": args.limit, "as_json": args.json}
        return run_once(settings, as_of=args.as_of, full_refresh=args.full_refresh, dry_run=args.dry_run, **options)
    if args.command == "backfill":
        from memberpulse.flows.backfill import run_once as backfill_once

        return backfill_once(settings)
    if args.command == "report":
        from memberpulse.flows.report import write_report

        print(f"report written: {write_report(settings.snapshots_dir, args.out)}")
        return ExitCode.OK
    if args.command == "sql":
        from memberpulse.flows.snapshot._query import run_sql

        return run_sql(settings.snapshots_dir, args.query, fmt=args.format, out=args.out)
    return _run_other_command(args, settings)


def _run_other_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "migrate":
        from memberpulse.flows.publish._migrations import migrate_cli

        return migrate_cli(settings)
    if args.command == "demo":
        from memberpulse.demo import main as demo_main

        return demo_main(settings)
    raise AssertionError(f"unhandled command {args.command}")


def _detach_stdout() -> None:
    """Point standard output at the null device once its reader is gone: Python flushes it at exit, and that
    flush would print a BrokenPipeError of its own (the recipe in the ``signal`` module's note on SIGPIPE)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (captured in tests): nothing to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args, load_settings())
    except OutputClosed as exc:  # the reader stopped early (`| head`): nothing to say, and no one to say it to
        _detach_stdout()
        return exc.exit_code
    except MemberpulseError as exc:
        if os.environ.get("MEMBERPULSE_LOG_LEVEL", "").strip().upper() == "DEBUG":
            traceback.print_exc()
        print(f"memberpulse {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
