"""``memberpulse backfill``: one backfill as plain calls (no Prefect server a kill could leave behind), its
progress shown (a live bar per resource on a terminal, plain lines in logs and pipes), and a one-line result."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from memberpulse.errors import ExitCode, MemberpulseError
from memberpulse.flows.backfill import ResourceResult, backfill, rate, reporting
from memberpulse.flows.whop import Resource, RetryEvent, backfill_skip_reason, latest_snapshot
from memberpulse.settings import Settings


def command(args: argparse.Namespace, settings: Settings) -> int:
    return run_once(settings)


def run_once(settings: Settings) -> int:
    """One backfill, its fetches on two threads. Exit 0 done or skipped, 2 a setting to fix (bad credentials,
    bad config), 3 Whop stayed unavailable (run it again later)."""
    reason = backfill_skip_reason(settings)
    if reason is not None:
        print(f"memberpulse backfill: {reason}; nothing fetched, no snapshot written.")
        return ExitCode.OK
    progress: RichProgress | LineProgress = RichProgress() if sys.stdout.isatty() else LineProgress()
    companies = ", ".join(settings.listed_companies) or "(none listed)"
    print(f"memberpulse backfill: company {companies} from {_safe_url(settings)}")
    # Our own lines say what failed and how to fix it; Prefect's failure tracebacks would only bury them.
    prefect_logger = logging.getLogger("prefect")
    previous_level = prefect_logger.level
    prefect_logger.setLevel(logging.CRITICAL)
    try:
        with reporting(progress):
            if isinstance(progress, RichProgress):
                with progress:
                    result = backfill(settings)
            else:
                result = backfill(settings)
    except MemberpulseError as exc:  # 2: bad credentials or configuration; 3: Whop stayed unavailable
        return _failed(settings, exc)
    finally:
        prefect_logger.setLevel(previous_level)
    if result.snapshot is None:
        print(f"memberpulse backfill: {result.message}")
        return ExitCode.OK
    counts = ", ".join(f"{r.records:,} {r.resource}" for r in result.resources.values())
    print(
        f"memberpulse backfill: wrote {result.snapshot.path} ({counts}) in {result.seconds:.1f} s, "
        f"{rate(result.records, result.seconds)}"
    )
    if result.recovery_note:
        print(f"memberpulse backfill: {result.recovery_note}", file=sys.stderr if result.recovery_error else sys.stdout)
    return result.recovery_error.exit_code if result.recovery_error else ExitCode.OK


def _safe_url(settings: Settings) -> str:
    """The base URL without any ``user:password@`` part (secrets never reach output)."""
    url = urlsplit(settings.whop_api_base_url)
    if url.username is None and url.password is None:
        return settings.whop_api_base_url
    host = url.hostname or ""
    return urlunsplit(url._replace(netloc=f"{host}:{url.port}" if url.port else host))


def _failed(settings: Settings, exc: MemberpulseError) -> int:
    print(f"memberpulse backfill: {exc}", file=sys.stderr)
    previous = latest_snapshot(settings.warehouse_dir)
    if previous is not None:
        print(f"memberpulse backfill: no snapshot written; the latest is still {previous.path}", file=sys.stderr)
    else:
        print("memberpulse backfill: no snapshot written", file=sys.stderr)
    return exc.exit_code


class RichProgress:
    """A live bar per resource on a terminal: pages, records so far, rate. (A ``BackfillProgress``: the two fetches
    call it from their threads.)"""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description:<11}"),
            TextColumn("{task.fields[pages]:>6,} pages"),
            TextColumn("{task.completed:>10,.0f} records"),
            TextColumn("{task.fields[rate]:>18}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def _task(self, resource: str) -> TaskID:
        with self._lock:
            if resource not in self._tasks:
                self._tasks[resource] = self._bar.add_task(resource, total=None, pages=0, rate="")
            return self._tasks[resource]

    def page(self, resource: Resource, pages: int, records: int, elapsed: float) -> None:
        self._bar.update(self._task(resource), completed=records, pages=pages, rate=rate(records, elapsed))

    def retry(self, event: RetryEvent) -> None:
        self._bar.console.print(
            f"[yellow]{event.resource} page {event.page}: {event.reason}, retrying in {event.wait:.1f} s"
        )

    def finished(self, result: ResourceResult) -> None:
        task_id = self._task(result.resource)
        self._bar.update(
            task_id,
            total=result.records,
            completed=result.records,
            pages=result.pages,
            rate=rate(result.records, result.seconds),
        )


class LineProgress:
    """Plain lines for logs and pipes: the first page, then at most one line per ``every`` seconds per
    resource, every retry, and a final line per resource. (A thread-safe ``BackfillProgress``.)"""

    def __init__(self, stream: TextIO | None = None, every: float = 2.0) -> None:
        self._stream = stream
        self._every = every
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def _print(self, line: str) -> None:
        with self._lock:
            print(line, file=self._stream or sys.stdout, flush=True)

    def page(self, resource: Resource, pages: int, records: int, elapsed: float) -> None:
        now = time.monotonic()
        with self._lock:
            due = resource not in self._last or now - self._last[resource] >= self._every
            if due:
                self._last[resource] = now
        if due:
            self._print(f"backfill {resource}: page {pages}, {records:,} records, {rate(records, elapsed)}")

    def retry(self, event: RetryEvent) -> None:
        self._print(
            f"backfill {event.resource}: page {event.page} {event.reason}, retrying in {event.wait:.1f} s "
            f"(attempt {event.attempt})"
        )

    def finished(self, result: ResourceResult) -> None:
        self._print(
            f"backfill {result.resource}: done, {result.pages} pages, {result.records:,} records in "
            f"{result.seconds:.1f} s ({rate(result.records, result.seconds)})"
        )
