"""``memberpulse backfill [--all]``: one backfill as plain calls (no Prefect server a kill could leave behind), its
progress shown (a live bar per company and resource on a terminal, plain lines in logs and pipes), a one-line
result and a table of the companies that failed, with why."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from memberpulse.cli._failures import print_failures
from memberpulse.errors import FAILURE_KIND_CODES, ExitCode, MemberpulseError
from memberpulse.flows.backfill import BackfillResult, ResourceResult, backfill, rate, reporting
from memberpulse.flows.whop import Resource, RetryEvent, backfill_dir, backfill_skip_reason, latest_snapshot
from memberpulse.settings import Settings

#: Past this many companies the terminal shows one bar for all of them, not a bar per company and resource.
BARS_PER_COMPANY_UP_TO = 4


def command(args: argparse.Namespace, settings: Settings) -> int:
    return run_once(settings, all_companies=args.all_companies)


def run_once(settings: Settings, *, all_companies: bool = False) -> int:
    """One backfill, companies side by side. Exit 0 every company written (or nothing to do), 2 a setting or a
    company to fix (bad credentials, an uninstalled company), 3 Whop stayed unavailable for some company (run it
    again later: it fetches only those); the other companies' snapshots are written either way."""
    reason = backfill_skip_reason(settings)
    if reason is not None:
        print(f"memberpulse backfill: {reason}; nothing fetched, no snapshot written.")
        return ExitCode.OK
    progress: RichProgress | LineProgress = RichProgress() if sys.stdout.isatty() else LineProgress()
    print(f"memberpulse backfill: from {_safe_url(settings)}")
    # Our own lines say what failed and how to fix it; Prefect's failure tracebacks would only bury them.
    prefect_logger = logging.getLogger("prefect")
    previous_level = prefect_logger.level
    prefect_logger.setLevel(logging.CRITICAL)
    try:
        with reporting(progress):
            if isinstance(progress, RichProgress):
                with progress:
                    result = backfill(settings, all_companies=all_companies)
            else:
                result = backfill(settings, all_companies=all_companies)
    except MemberpulseError as exc:  # the whole backfill: 2 configuration or damaged state, 3 storage
        _failed(settings, str(exc))
        return exc.exit_code
    finally:
        prefect_logger.setLevel(previous_level)
    _print_result(settings, result)
    return exit_code(result)


def exit_code(result: BackfillResult) -> ExitCode:
    """0 when every company was written and the recovery did not fail; else the code of the most pressing
    failure (2, a setting or a company to fix, before 1 before 3, try later), the companies' before the
    recovery's."""
    if result.failure_kind is not None:
        return FAILURE_KIND_CODES[result.failure_kind]
    return result.recovery_error.exit_code if result.recovery_error else ExitCode.OK


def _print_result(settings: Settings, result: BackfillResult) -> None:
    if result.status == "skipped":
        print(f"memberpulse backfill: {result.message}")
        return
    if not result.written and len(result.failures) == 1:  # one company: its failure in one line, as ever
        (failure,) = result.failures.values()
        _failed(settings, failure.reason)
    else:
        _print_written(settings, result)
    if result.recovery_note:
        print(f"memberpulse backfill: {result.recovery_note}", file=sys.stderr if result.recovery_error else sys.stdout)


def _print_written(settings: Settings, result: BackfillResult) -> None:
    counts = ", ".join(f"{r.records:,} {r.resource}" for r in result.resources.values()) or "no records"
    only = result.snapshot if len(result.written) == 1 else None
    where = str(only.path) if only else f"{len(result.written)} snapshots under {backfill_dir(settings.warehouse_dir)}"
    print(
        f"memberpulse backfill: wrote {where} ({counts}) in {result.seconds:.1f} s, "
        f"{rate(result.records, result.seconds)}"
    )
    if result.fetched_this_round:
        started = f"{result.round_started:%Y-%m-%d %H:%M} UTC" if result.round_started else "earlier"
        print(
            f"memberpulse backfill: {len(result.fetched_this_round)} other company(ies) were fetched in this round "
            f"(since {started}) and left alone: this backfill retried the rest (`--all` fetches every company)"
        )
    if result.failures:
        _print_failures(result)


def _print_failures(result: BackfillResult) -> None:
    print_failures(
        "backfill", f"{len(result.failures)} company(ies) not backfilled", "company", result.failures,
        "the others are written; their earlier snapshots stay the latest for those above, and the next backfill "
        "fetches only them",
    )  # fmt: skip


def _safe_url(settings: Settings) -> str:
    """The base URL without any ``user:password@`` part (secrets never reach output)."""
    url = urlsplit(settings.whop_api_base_url)
    if url.username is None and url.password is None:
        return settings.whop_api_base_url
    host = url.hostname or ""
    return urlunsplit(url._replace(netloc=f"{host}:{url.port}" if url.port else host))


def _failed(settings: Settings, reason: str) -> None:
    """What stopped a backfill that wrote nothing, and which snapshot stays the latest."""
    print(f"memberpulse backfill: {reason}", file=sys.stderr)
    previous = latest_snapshot(settings.warehouse_dir)
    if previous is not None:
        print(f"memberpulse backfill: no snapshot written; the latest is still {previous.path}", file=sys.stderr)
    else:
        print("memberpulse backfill: no snapshot written", file=sys.stderr)


class RichProgress:
    """A live bar per company and resource on a terminal (pages, records so far, rate), or, for many companies,
    one bar of companies done. (A ``BackfillProgress``: the fetches call it from their threads.)"""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description:<28}"),
            BarColumn(bar_width=None),
            TextColumn("{task.fields[pages]:>6,} pages"),
            TextColumn("{task.fields[records]:>10,} records"),
            TextColumn("{task.fields[rate]:>18}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()
        self._per_company = True
        self._started = time.monotonic()
        self._records = 0

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def _task(self, name: str, total: int | None = None) -> TaskID:
        with self._lock:
            if name not in self._tasks:
                self._tasks[name] = self._bar.add_task(name, total=total, pages=0, records=0, rate="")
            return self._tasks[name]

    def started(self, companies: Sequence[str]) -> None:
        self._per_company = len(companies) <= BARS_PER_COMPANY_UP_TO
        if not self._per_company:
            self._task("companies", total=len(companies))

    def page(self, company_id: str, resource: Resource, pages: int, records: int, elapsed: float) -> None:
        if self._per_company:
            self._bar.update(
                self._task(f"{company_id} {resource}"), pages=pages, records=records, rate=rate(records, elapsed)
            )

    def retry(self, event: RetryEvent) -> None:
        self._bar.console.print(
            f"[yellow]{event.company_id} {event.resource} page {event.page}: {event.reason}, retrying in "
            f"{event.wait:.1f} s"
        )

    def finished(self, result: ResourceResult) -> None:
        if self._per_company:
            task_id = self._task(f"{result.company_id} {result.resource}")
            self._bar.update(task_id, total=1, completed=1, pages=result.pages, records=result.records)
            return
        with self._lock:
            self._records += result.records
            records = self._records
        elapsed = time.monotonic() - self._started
        self._bar.update(self._task("companies"), records=records, rate=rate(records, elapsed))

    def company_done(self, company_id: str, failure: str | None) -> None:
        if failure is not None:
            self._bar.console.print(f"[red]{company_id}: {failure}")
        if not self._per_company:
            self._bar.advance(self._task("companies"))


class LineProgress:
    """Plain lines for logs and pipes: the first page, then at most one line per ``every`` seconds per company
    and resource, every retry, a final line per resource and one per company that failed. (A thread-safe
    ``BackfillProgress``.) With one company, lines do not name it."""

    def __init__(self, stream: TextIO | None = None, every: float = 2.0) -> None:
        self._stream = stream
        self._every = every
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self._named = False

    def _print(self, line: str) -> None:
        with self._lock:
            print(line, file=self._stream or sys.stdout, flush=True)

    def _what(self, company_id: str, resource: str) -> str:
        return f"{company_id} {resource}" if self._named else resource

    def started(self, companies: Sequence[str]) -> None:
        self._named = len(companies) > 1
        self._print(f"backfill: {len(companies)} company(ies): {', '.join(companies[:5])}{' …' * (len(companies) > 5)}")

    def page(self, company_id: str, resource: Resource, pages: int, records: int, elapsed: float) -> None:
        now, what = time.monotonic(), self._what(company_id, resource)
        with self._lock:
            due = what not in self._last or now - self._last[what] >= self._every
            if due:
                self._last[what] = now
        if due:
            self._print(f"backfill {what}: page {pages}, {records:,} records, {rate(records, elapsed)}")

    def retry(self, event: RetryEvent) -> None:
        self._print(
            f"backfill {self._what(event.company_id, event.resource)}: page {event.page} {event.reason}, retrying in "
            f"{event.wait:.1f} s (attempt {event.attempt})"
        )

    def finished(self, result: ResourceResult) -> None:
        self._print(
            f"backfill {self._what(result.company_id, result.resource)}: done, {result.pages} pages, "
            f"{result.records:,} records in {result.seconds:.1f} s ({rate(result.records, result.seconds)})"
        )

    def company_done(self, company_id: str, failure: str | None) -> None:
        if failure is not None:
            self._print(f"backfill {company_id}: failed: {failure}")
