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
from collections.abc import Sequence
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


def _parse_since(text: str) -> datetime:
    return _parse_as_of(text, "--since")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memberpulse",
        description="Keep a Whop creator's member activity true, fresh and queryable.",
        epilog="exit codes: 0 ok, 1 failed, 2 fix your configuration, 3 transient failure (try again), "
        "141 standard output closed early (e.g. by | head)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the webhook landing endpoint")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)

    send = sub.add_parser("send-test", help="sign a mock webhook with the configured secret and post it")
    send.add_argument("event", help="an event type (e.g. membership.went_valid) or 'all'")
    send.add_argument("--url", default=DEFAULT_WEBHOOK_URL)
    send.add_argument(
        "--via-whop", action="store_true", help="ask Whop to send its own sample to the configured webhook instead"
    )

    run = sub.add_parser("run", help="one reconcile flow run: ingest, score, publish, snapshot")
    run.add_argument("--as-of", type=_parse_as_of, default=None, help="score as of this ISO 8601 time")
    run.add_argument("--full-refresh", action="store_true", help="rebuild from all raw data")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="ingest and score in memory, print what would be published; commit, publish and write nothing",
    )

    sub.add_parser("backfill", help="one backfill flow run from Whop's REST API")
    report = sub.add_parser("report", help="write the analysts' HTML report of the latest snapshot")
    report.add_argument("--out", type=Path, default=None, help="where to write it (default: snapshots/report.html)")

    sql = sub.add_parser("sql", help="run one read-only SQL query against the latest snapshot")
    sql.add_argument("query", help='e.g. "SELECT status, count(*) FROM member_activity GROUP BY ALL"')
    sql.add_argument(
        "--format",
        choices=("table", "csv", "json", "parquet"),
        default="table",
        help="table (the default): up to 1000 rows as plain text, control and bidi characters escaped "
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

    recover = sub.add_parser("recover", help="bring back webhooks the landing missed, from Whop's delivery log")
    recover.add_argument(
        "--since", type=_parse_since, default=None, help="read back to this ISO 8601 time (default: where the "
        "last recovery stopped, at most 30 days)",
    )  # fmt: skip
    recover.add_argument("--replay", action="store_true", help="ask Whop to re-send the failed deliveries instead")
    sub.add_parser("migrate", help="apply supabase/migrations through SUPABASE_DB_URL")
    sub.add_parser("demo", help="the whole loop on this machine, no credentials needed")
    return parser


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
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

        return send_test(args.event, url=args.url, settings=settings)
    if args.command == "recover":
        from memberpulse.flows.recover import run_once as recover_once

        return recover_once(settings, since=args.since, replay=args.replay)
    if args.command == "run":
        from memberpulse.flows.reconcile import run_once

        return run_once(settings, as_of=args.as_of, full_refresh=args.full_refresh, dry_run=args.dry_run)
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
    if args.command == "migrate":
        from memberpulse.flows.publish.migrations import migrate_cli

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
