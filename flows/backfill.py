"""The backfill flow: every page of the company's memberships and members from Whop's REST API, written as
one immutable snapshot (``warehouse/backfill/<fetched_at>/``) that the reconcile flow folds in.

``memberpulse backfill`` calls :func:`run_once`; deployments run :func:`backfill_flow`. Without
``WHOP_API_KEY`` and ``WHOP_COMPANY_ID`` the backfill is skipped and says so (exit 0).

Retries happen at two levels, each for what it can fix: the Whop client retries one page (429 waits, 5xx and
timeouts with backoff, see ``flows/whop``) and gives up with :class:`WhopGaveUp` past its bounds; the Prefect
tasks retry only on a :class:`TransientError` that escaped (a disk hiccup writing Parquet), restarting their
resource from page 1 into a fresh file.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol, TextIO
from urllib.parse import urlsplit, urlunsplit

from prefect import flow, task
from prefect.futures import wait
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from memberpulse.errors import ConfigError, FatalError, TransientError, WhopAuthError, WhopGaveUp
from memberpulse.flows.console import quiet_prefect
from memberpulse.flows.retry_policy import TRANSIENT_RETRY
from memberpulse.flows.whop import (
    MEMBERS_SCHEMA,
    MEMBERSHIPS_SCHEMA,
    BackfillSnapshot,
    ParquetSink,
    Resource,
    RetryEvent,
    SnapshotWriter,
    WhopBackfillClient,
    backfill_skip_reason,
    clean_stale_tmp,
    latest_snapshot,
    members_batch,
    memberships_batch,
    validate_backfill_settings,
)
from memberpulse.settings import Settings

log = logging.getLogger("memberpulse.backfill")

EXIT_OK, EXIT_CONFIG, EXIT_TRANSIENT = 0, 2, 3


@dataclass(frozen=True)
class ResourceResult:
    resource: Resource
    pages: int
    records: int
    seconds: float


@dataclass(frozen=True)
class BackfillResult:
    status: Literal["written", "skipped"]
    message: str
    snapshot: BackfillSnapshot | None = None
    resources: dict[str, ResourceResult] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def records(self) -> int:
        return sum(r.records for r in self.resources.values())


# --- progress -----------------------------------------------------------------------------------------------


class BackfillProgress(Protocol):
    """Receives progress from the fetch tasks (they run in Prefect's worker threads: implementations must be
    thread-safe)."""

    def page(self, resource: Resource, pages: int, records: int, elapsed: float) -> None: ...
    def retry(self, event: RetryEvent) -> None: ...
    def finished(self, result: ResourceResult) -> None: ...


_progress_lock = threading.Lock()
_progress: BackfillProgress | None = None


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


def _rate(records: int, elapsed: float) -> str:
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
        self._bar.update(self._task(resource), completed=records, pages=pages, rate=_rate(records, elapsed))

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
            rate=_rate(result.records, result.seconds),
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
            self._print(f"backfill {resource}: page {pages}, {records:,} records, {_rate(records, elapsed)}")

    def retry(self, event: RetryEvent) -> None:
        self._print(
            f"backfill {event.resource}: page {event.page} {event.reason}, retrying in {event.wait:.1f} s "
            f"(attempt {event.attempt})"
        )

    def finished(self, result: ResourceResult) -> None:
        self._print(
            f"backfill {result.resource}: done, {result.pages} pages, {result.records:,} records in "
            f"{result.seconds:.1f} s ({_rate(result.records, result.seconds)})"
        )


# --- tasks and flow -----------------------------------------------------------------------------------------


def fetch_resource(resource: Resource, settings: Settings, tmp_dir: Path, fetched_at: datetime) -> ResourceResult:
    """Stream every page of ``resource`` into ``tmp_dir/<resource>.parquet`` (a retry starts it over)."""
    progress = _progress

    def on_retry(event: RetryEvent) -> None:
        if progress is not None:
            progress.retry(event)

    started = time.monotonic()
    schema = MEMBERSHIPS_SCHEMA if resource == "memberships" else MEMBERS_SCHEMA
    sink = ParquetSink(tmp_dir / f"{resource}.parquet", schema)
    pages = 0
    try:
        with WhopBackfillClient.from_settings(settings, on_retry=on_retry) as client:
            for page in client.pages(resource):
                if resource == "memberships":
                    batch = memberships_batch(page.items, company_id=client.company_id, fetched_at=fetched_at)
                else:
                    batch = members_batch(page.items, fetched_at=fetched_at)
                sink.write(batch)
                pages = page.number
                if progress is not None:
                    progress.page(resource, pages, sink.rows, time.monotonic() - started)
        records = sink.close()
    except BaseException:
        sink.abort()
        raise
    result = ResourceResult(resource, pages, records, time.monotonic() - started)
    log.info("backfill %s: %d pages, %d records in %.1f s", resource, pages, records, result.seconds)
    if progress is not None:
        progress.finished(result)
    return result


@task(name="backfill-memberships", persist_result=False, **TRANSIENT_RETRY)
def fetch_memberships(settings: Settings, tmp_dir: Path, fetched_at: datetime) -> ResourceResult:
    return fetch_resource("memberships", settings, tmp_dir, fetched_at)


@task(name="backfill-members", persist_result=False, **TRANSIENT_RETRY)
def fetch_members(settings: Settings, tmp_dir: Path, fetched_at: datetime) -> ResourceResult:
    return fetch_resource("members", settings, tmp_dir, fetched_at)


@flow(name="backfill", validate_parameters=False, persist_result=False)
def backfill_flow(settings: Settings | None = None) -> BackfillResult:
    """One backfill: both resources fetched concurrently into a tmp dir, then published as one snapshot.

    Raises :class:`WhopAuthError`/:class:`ConfigError` (fix a variable), :class:`WhopGaveUp` (Whop stayed
    down past the bounds). On any failure no snapshot is written and the previous one stays the latest.
    """
    settings = settings or Settings()
    reason = backfill_skip_reason(settings)
    if reason is not None:
        log.warning(reason)
        return BackfillResult(status="skipped", message=reason)
    validate_backfill_settings(settings)
    assert settings.whop_company_id is not None
    started = time.monotonic()
    clean_stale_tmp(settings.warehouse_dir)
    fetched_at = datetime.now(UTC)
    with SnapshotWriter(
        settings.warehouse_dir, fetched_at=fetched_at, company_id=settings.whop_company_id.strip()
    ) as writer:
        futures = [
            fetch_memberships.submit(settings, writer.tmp_dir, fetched_at),
            fetch_members.submit(settings, writer.tmp_dir, fetched_at),
        ]
        # Wait for both before looking at either: a failed one must not delete the tmp dir under the other.
        wait(futures)
        results = [f.result() for f in futures]
        snapshot = writer.commit(pages={r.resource: r.pages for r in results})
    result = BackfillResult(
        status="written",
        message=f"snapshot {snapshot.path}",
        snapshot=snapshot,
        resources={r.resource: r for r in results},
        seconds=time.monotonic() - started,
    )
    _summary_artifact(result)
    return result


def _summary_artifact(result: BackfillResult) -> None:
    """A markdown summary on the flow run (deployments show it in the UI); never fails the run."""
    try:
        from prefect.artifacts import create_markdown_artifact

        rows = "\n".join(
            f"| {r.resource} | {r.pages} | {r.records} | {_rate(r.records, r.seconds)} |"
            for r in result.resources.values()
        )
        create_markdown_artifact(
            key="backfill-summary",
            markdown=f"## Backfill\n\n{result.message}\n\n"
            f"| resource | pages | records | rate |\n|---|---|---|---|\n{rows}\n",
            description="memberpulse backfill",
        )
    except Exception as exc:  # an artifact is a nicety
        log.debug("could not create the backfill artifact: %s", exc)


# --- CLI entry point ----------------------------------------------------------------------------------------


def run_once(settings: Settings) -> int:
    """``memberpulse backfill``: one flow run in Prefect's ephemeral mode. Exit 0 done or skipped, 2 a setting
    to fix (bad credentials, bad config), 3 Whop stayed unavailable (run it again later)."""
    reason = backfill_skip_reason(settings)
    if reason is not None:
        print(f"memberpulse backfill: {reason}; nothing fetched, no snapshot written.")
        return EXIT_OK
    try:
        validate_backfill_settings(settings)
    except ConfigError as exc:
        print(f"memberpulse backfill: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    quiet_prefect()
    # The ephemeral Prefect server inherits the environment; its telemetry only adds SQLite lock contention.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    interactive = sys.stdout.isatty()
    progress: RichProgress | LineProgress = RichProgress() if interactive else LineProgress()
    assert settings.whop_company_id is not None
    print(f"memberpulse backfill: company {settings.whop_company_id.strip()} from {_safe_url(settings)}")
    # Our own lines say what failed and how to fix it; Prefect's failure tracebacks would only bury them.
    prefect_logger = logging.getLogger("prefect")
    previous_level = prefect_logger.level
    prefect_logger.setLevel(logging.CRITICAL)
    try:
        with reporting(progress):
            if isinstance(progress, RichProgress):
                with progress:
                    result = backfill_flow(settings)
            else:
                result = backfill_flow(settings)
    except (WhopAuthError, ConfigError) as exc:
        return _failed(settings, exc, EXIT_CONFIG)
    except (WhopGaveUp, TransientError) as exc:
        return _failed(settings, exc, EXIT_TRANSIENT)
    except FatalError as exc:
        return _failed(settings, exc, EXIT_CONFIG)
    finally:
        prefect_logger.setLevel(previous_level)
    if result.snapshot is None:
        print(f"memberpulse backfill: {result.message}")
        return EXIT_OK
    counts = ", ".join(f"{r.records:,} {r.resource}" for r in result.resources.values())
    print(
        f"memberpulse backfill: wrote {result.snapshot.path} ({counts}) in {result.seconds:.1f} s, "
        f"{_rate(result.records, result.seconds)}"
    )
    return EXIT_OK


def _safe_url(settings: Settings) -> str:
    """The base URL without any ``user:password@`` part (secrets never reach output)."""
    url = urlsplit(settings.whop_api_base_url)
    if url.username is None and url.password is None:
        return settings.whop_api_base_url
    host = url.hostname or ""
    return urlunsplit(url._replace(netloc=f"{host}:{url.port}" if url.port else host))


def _failed(settings: Settings, exc: Exception, code: int) -> int:
    print(f"memberpulse backfill: {exc}", file=sys.stderr)
    previous = latest_snapshot(settings.warehouse_dir)
    if previous is not None:
        print(f"memberpulse backfill: no snapshot written; the latest is still {previous.path}", file=sys.stderr)
    else:
        print("memberpulse backfill: no snapshot written", file=sys.stderr)
    return code


__all__ = [
    "BackfillProgress",
    "BackfillResult",
    "LineProgress",
    "ResourceResult",
    "RichProgress",
    "backfill_flow",
    "fetch_resource",
    "reporting",
    "run_once",
]
