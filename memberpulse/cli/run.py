"""``memberpulse run``: one reconcile run without Prefect, and what it shows a person or a program.

The terminal gets the summary table (stdout; none at ``MEMBERPULSE_LOG_LEVEL=WARNING`` or above), warnings
and failures (stderr, always), and for a dry run the rows it would send. ``--json`` prints the run's report
as one JSON object instead; a dry run's ``--format csv|json`` prints every row it would send to stdout (the
summary then goes to stderr), so either can be piped. Ctrl-C says in one line what was committed (exit 130).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Literal

import polars as pl
from rich.console import Console
from rich.table import Table
from rich.text import Text

from memberpulse.errors import ConfigError, ExitCode
from memberpulse.flows.reconcile import COMPANY_HEADINGS, RunReport, one_off_run
from memberpulse.settings import Settings

RowsFormat = Literal["table", "csv", "json"]
DRY_RUN_LIMIT = 20  # rows a dry run lists by default; --limit, or --format csv|json for all of them
_SHOWN = ("action", "membership_id", "member_name", "status", "engagement_score", "last_active")
BELOW_TABLE = ("data dir", "snapshot", "analyst report", "WARNING")  # printed whole, under the table


def command(args: argparse.Namespace, settings: Settings) -> int:
    return run_once(
        settings,
        as_of=args.as_of,
        full_refresh=args.full_refresh,
        dry_run=args.dry_run,
        rows_format=args.format,
        limit=args.limit,
        as_json=args.json,
    )


def run_once(
    settings: Settings,
    *,
    as_of: datetime | None,
    full_refresh: bool,
    dry_run: bool = False,
    rows_format: RowsFormat = "table",
    limit: int = DRY_RUN_LIMIT,
    as_json: bool = False,
) -> int:
    """One run of the reconcile steps as plain calls, then its output. A failed publish prints the summary
    (the snapshot was written) and what to do, and returns the publish error's exit code (3 when the target
    may heal)."""
    if rows_format != "table" and not dry_run:
        raise ConfigError("--format is for the rows of a --dry-run", hint="add --dry-run, or leave --format out")
    if rows_format != "table" and as_json:
        raise ConfigError("--json and --format csv|json both write to stdout", hint="give one of them")
    report = one_off_run(settings, as_of=as_of, full_refresh=full_refresh, dry_run=dry_run, on_warning=_warn)
    _show(report, settings, rows_format=rows_format, limit=limit, as_json=as_json)
    return _outcome(report)


def _warn(warning: str) -> None:
    print(f"memberpulse run: warning: {warning}", file=sys.stderr)


def _show(report: RunReport, settings: Settings, *, rows_format: RowsFormat, limit: int, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.as_dict(), sort_keys=True, default=str))
        return
    rows_to_stdout = report.mode == "dry-run" and rows_format != "table"
    console = Console(stderr=rows_to_stdout)
    if settings.log_level in ("DEBUG", "INFO"):
        print_summary(report, console)
    else:
        for warning in report.warnings:  # quiet, but never silent about what needs a look
            _warn(warning)
    if report.mode != "dry-run" or report.would_publish is None:
        return
    if rows_to_stdout:
        _write_rows(report.would_publish, rows_format)
    elif settings.log_level in ("DEBUG", "INFO"):
        _print_rows(console, report.would_publish, limit)


def print_summary(report: RunReport, console: Console | None = None) -> None:
    """The terminal view: the report's summary rows, members per status indented under "members"; paths whole
    below the table (a table cell would cut them with "…"). Every value is plain text, never rich markup."""
    table = Table(title=Text(report.title), show_lines=False)
    table.add_column("measure")
    table.add_column("value", justify="right")
    paths = []
    for name, value in report.summary_rows():
        if name in BELOW_TABLE:
            paths.append((name, value))
            continue
        table.add_row(Text(name), Text(value))
        if name == "members":
            for status, n in sorted(report.members_by_status.items()):
                table.add_row(Text(f"  {status}"), Text(str(n)))
    console = console or Console()
    console.print(table)
    _print_companies(report, console)
    for name, value in paths:
        console.print(Text(f"{name}: {value}"), soft_wrap=True)


def _print_companies(report: RunReport, console: Console) -> None:
    """What the run did per company, busiest first, for the companies it touched (none: no table)."""
    rows, note = report.company_rows()
    if not rows:
        return
    table = Table(title=Text(f"Per company ({len(report.companies)} touched by this run)"))
    for index, heading in enumerate(COMPANY_HEADINGS):
        table.add_column(heading, justify="left" if index == 0 else "right")
    for cells in rows:
        table.add_row(*(Text(cell) for cell in cells))
    console.print(table)
    if note:
        console.print(Text(note))


def _write_rows(rows: pl.DataFrame, rows_format: RowsFormat) -> None:
    if rows_format == "csv":
        rows.write_csv(sys.stdout)
    else:
        sys.stdout.write(rows.write_json() + "\n")
    sys.stdout.flush()


def _print_rows(console: Console, rows: pl.DataFrame, limit: int) -> None:
    table = Table(title=Text(f"Rows it would insert or update ({rows.height})"))
    for column in _SHOWN:
        table.add_column(column)
    for row in rows.head(limit).select(_SHOWN).iter_rows():
        table.add_row(*(Text("" if value is None else str(value)) for value in row))
    console.print(table)
    if rows.height > limit:
        console.print(Text(f"… and {rows.height - limit} more: --limit N shows more, --format csv|json all of them"))


def _outcome(report: RunReport) -> int:
    failure = report.publish_failure
    if failure is None:
        return int(ExitCode.OK)
    what_to_do = (failure.hint or "fix the publish target").rstrip(".")
    print(
        f"memberpulse run: publish failed: {failure.message}\n"
        f"  the snapshot was written all the same: {report.snapshot_path}\n"
        f"  what to do: {what_to_do} — then run `memberpulse run` again; it sends every pending row",
        file=sys.stderr,
    )
    return int(failure.exit_code)
