"""Progress of a backfill, for whoever watches: the fetch tasks report to a :class:`BackfillProgress` the caller
supplies (``memberpulse backfill`` shows it on the terminal), or only to the log.

The fetch tasks run in Prefect's worker threads and cannot be handed an object through the flow's
parameters (Prefect records those), so the caller routes progress to them for the duration of a run with
:func:`reporting`; a deployment has no terminal and logs through ``memberpulse.backfill`` instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from memberpulse.flows.whop import Resource, RetryEvent


@dataclass(frozen=True)
class ResourceResult:
    resource: Resource
    pages: int
    records: int
    seconds: float
    company_id: str = ""


class BackfillProgress(Protocol):
    """Receives progress from the fetches (they run on worker threads, several companies at once:
    implementations must be thread-safe). ``started`` names the companies the run fetches; each company's
    fetch then reports its pages, retries (``event.company_id``) and each resource's end, and ``company_done``
    its outcome: None when its snapshot was written, else why it failed."""

    def started(self, companies: Sequence[str]) -> None: ...
    def page(self, company_id: str, resource: Resource, pages: int, records: int, elapsed: float) -> None: ...
    def retry(self, event: RetryEvent) -> None: ...
    def finished(self, result: ResourceResult) -> None: ...
    def company_done(self, company_id: str, failure: str | None) -> None: ...


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
    """Records per second, as people read it (the flow's artifact and the CLI's progress say it alike)."""
    return f"{records / elapsed:,.0f} records/s" if elapsed > 0 else "—"
