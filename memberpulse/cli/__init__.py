"""The ``memberpulse`` console script: it owns the terminal. Flows and the landing return results and raise
errors; each command's module here (``memberpulse.cli.<command>``) shows them — tables, progress, lines.

Exit codes (``memberpulse.errors.ExitCode``): 0 success; 1 the job ran and failed (e.g. send-test got a
non-200); 2 bad usage or configuration (a person must fix something); 3 a transient failure (retrying later
may succeed); 130 interrupted; 141 standard output closed early (``memberpulse sql ... | head``), quietly. An
error that stops a command carries its code (``exit_code``); :func:`main` maps it to the exit, in one place (a
command that has more to say about it first, as backfill and recover do, returns that same code).
A command's module is imported only when it runs, so ``memberpulse send-test`` does not pay for Prefect's import.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib import import_module

from memberpulse.cli._parser import build_parser, version
from memberpulse.errors import ExitCode, MemberpulseError, OutputClosed
from memberpulse.settings import Settings, load_settings

__all__ = ["build_parser", "main", "quiet_prefect", "version"]

Handler = Callable[[argparse.Namespace, Settings], int]
# Commands that read or write the data dir say which one on stderr once they succeeded, so an error stays one
# line and stdout stays the data (``run`` says it in its summary, ``serve`` in its "Listening" line).
_DATA_DIR_SHOWN = ("backfill", "recover", "report", "sql", "demo")
_QUIET_PREFECT = ("run", "backfill", "demo")  # the commands that may import Prefect


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


def handler(command: str) -> Handler:
    """The ``command(args, settings)`` of ``memberpulse.cli.<command>`` (``send-test``: ``send_test``), imported
    only now."""
    module = import_module(f"memberpulse.cli.{command.replace('-', '_')}")
    found: Handler = module.command
    return found


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command in _QUIET_PREFECT:
        quiet_prefect()  # before anything imports Prefect: it reads its settings once, at import
    code = handler(args.command)(args, settings)
    if code == ExitCode.OK and args.command in _DATA_DIR_SHOWN and settings.log_level in ("DEBUG", "INFO"):
        print(f"memberpulse {args.command}: data dir {settings.data_dir.resolve()}", file=sys.stderr)
    return code


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
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
