"""Progress of a backfill for a person watching: a live bar on a terminal, plain lines in logs and pipes.

The fetch tasks run in Prefect's worker threads and cannot be handed an object through the flow's
parameters (Prefect records those), so the CLI routes progress to them for the duration of a run with
:func:`reporting`; a deployment has no terminal and logs through ``memberpulse.backfill`` instead.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from memberpulse.flows.whop import Resource, RetryEvent


@dataclass(frozen=True)
class ResourceResult:
    resource: Resource
    pages: int
    records: int
    seconds: float


class BackfillProgress(Protocol):
    """Receives progress from the fetch tasks (they run in Prefect's worker threads: implementations must be
    thread-safe)."""

    def page(self, resource: Resource, pages: int, records: int, elapsed: float) -> None: ...
    def retry(self, event: RetryEvent) -> None: ...
    def finished(self, result: ResourceResult) -> None: ...


_progress_lock = threading.Lock()
_progress: BackfillProgress | None = None


def current() -> BackfillProgress | None:
    """Where progress goes right now (None: only the log)."""
    return _progress


@contextmanager
def reporting(progress: BackfillProgress) -> Iterator[None]:
    """Route the fetch tasks' progress to ``progress`` for the duration (in-process runs only; a deployment
    has no terminal and logs through ``memberpulse.backfill``)."""
    global _progress
    with _progress_lock:
        previous, _progress = _progress, progress
    try:
        yield
    finally:
        with _progress_lock:
            _progress = previous


def rate(records: int, elapsed: float) -> str:
    return f"{records / elapsed:,.0f} records/s" if elapsed > 0 else "—"


class RichProgress:
    """A live bar per resource on a terminal: pages, records so far, rate."""

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
    resource, every retry, and a final line per resource."""

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
