"""The durable raw store: this process's NDJSON segments under ``<landing_dir>/dt=YYYY-MM-DD/``.

Group commit: every ``append`` joins a pending batch; one flush at a time writes the whole batch with a single
``write`` and a single ``fsync`` on a dedicated thread (never on the event loop), then resolves every waiter.
Appends that arrive while an fsync is in flight form the next batch, so a slow disk makes batches bigger
instead of making requests queue one fsync each.

Segments: one open file per process, named ``<host>-<pid>-<start>-<seq>.ndjson``. It is closed (and never
written again) when it would grow past ``segment_max_bytes``, when it is older than
``segment_max_age_seconds`` at the next write, when the record's UTC day changes, or after any I/O error
(a failed write may have left a partial line, which must stay the file's last bytes). Files only grow;
readers consume up to the last ``\\n`` only. The directory is fsync'd whenever a file or a day directory
is created, so a new segment's name is as durable as its bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from memberpulse.contracts.raw_record import segment_dir, segment_path
from memberpulse.contracts.times import file_time
from memberpulse.errors import StorageUnavailable

#: Bytes of recent webhook ids a process remembers to answer a redelivery without storing it again (ids are
#: chosen by the sender, so the bound is in bytes: ~100k typical ids, far fewer huge ones).
DEFAULT_RECENT_ID_BYTES = 16 * 1024 * 1024
#: What one remembered id costs beyond its characters (its str object and its dict entry), roughly.
_RECENT_ENTRY_OVERHEAD = 160

FlushObserver = Callable[[int, float], None]
#: Called with the reason (e.g. "No space left on device") whenever a batch could not be made durable.
FailureObserver = Callable[[str], None]


def writer_name(now: datetime | None = None) -> str:
    """A name no other process (here or on another host sharing the volume) will pick: host, pid, start time."""
    host = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"
    started = file_time(now or datetime.now(UTC))
    return f"{host}-{os.getpid()}-{started}"


@dataclass(slots=True)
class _Segment:
    path: Path
    fd: int
    day: date
    opened_at: float
    size: int = 0


@dataclass(slots=True)
class _Pending:
    webhook_id: str
    line: bytes
    day: date
    done: asyncio.Future[None]


class RawStore:
    """Append-only, fsync-before-ack storage of raw webhook records for one process.

    ``append`` must be called from one event loop. File work happens on one private thread, so segment state
    is only ever touched there. ``write``, ``fsync`` and ``clock`` are injectable for tests (slow, full or
    failing disks, age).
    """

    def __init__(
        self,
        root: Path,
        *,
        segment_max_bytes: int,
        segment_max_age_seconds: float,
        recent_id_bytes: int = DEFAULT_RECENT_ID_BYTES,
        writer: str | None = None,
        on_flush: FlushObserver | None = None,
        on_failure: FailureObserver | None = None,
        fsync: Callable[[int], None] = os.fsync,
        write: Callable[[int, memoryview], int] = os.write,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.writer = writer or writer_name()
        self._max_bytes = segment_max_bytes
        self._max_age = segment_max_age_seconds
        self._recent_limit = recent_id_bytes
        self._recent_bytes = 0
        self._on_flush = on_flush
        self._on_failure = on_failure
        self._fsync = fsync
        self._write = write
        self._clock = clock
        # id -> in-flight future, or None once durable. An OrderedDict is the LRU.
        self._recent: OrderedDict[str, asyncio.Future[None] | None] = OrderedDict()
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-store")
        self._segment: _Segment | None = None
        self._seq = 0
        self._closed = False
        #: Paths of every segment this store has opened, oldest first (diagnostics and tests).
        self.segments: list[Path] = []

    # --- event-loop side --------------------------------------------------------------------------------

    async def append(self, webhook_id: str, line: bytes, *, day: date) -> bool:
        """Make ``line`` (one complete NDJSON line, ending in ``\\n``) durable; True if stored, False if a
        recent duplicate. Raises :class:`StorageUnavailable` when it could not be made durable."""
        if self._closed:
            raise StorageUnavailable("the raw store is closed", hint="the server is shutting down; retry")
        if webhook_id in self._recent:
            self._recent.move_to_end(webhook_id)
            earlier = self._recent[webhook_id]
            if earlier is not None:
                # The first delivery is still being written: acknowledge the repeat only once it is durable.
                await asyncio.shield(earlier)
            return False
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._remember(webhook_id, done)
        self._pending.append(_Pending(webhook_id, line, day, done))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush_pending())
        await asyncio.shield(done)
        return True

    @property
    def recent_id_bytes(self) -> int:
        """Approximate memory held by the recent-id memory (bounded by ``recent_id_bytes``)."""
        return self._recent_bytes

    def _remember(self, webhook_id: str, value: asyncio.Future[None] | None) -> None:
        self._recent[webhook_id] = value
        self._recent_bytes += len(webhook_id) + _RECENT_ENTRY_OVERHEAD
        while self._recent_bytes > self._recent_limit and self._recent:
            oldest, entry = next(iter(self._recent.items()))
            if entry is not None and not entry.done():
                break  # never forget an id whose write is still in flight
            self._forget(oldest)

    def _forget(self, webhook_id: str) -> None:
        del self._recent[webhook_id]
        self._recent_bytes -= len(webhook_id) + _RECENT_ENTRY_OVERHEAD

    async def _flush_pending(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                started = time.perf_counter()
                try:
                    await loop.run_in_executor(self._executor, self._write_batch, [(p.line, p.day) for p in batch])
                except Exception as exc:  # OSError in practice; anything else must not strand the waiters
                    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
                    failure = StorageUnavailable(
                        f"could not make {len(batch)} webhook record(s) durable under {self.root}: {reason}",
                        hint="check free space and permissions of MEMBERPULSE_DATA_DIR; Whop will retry",
                    )
                    if self._on_failure is not None:
                        self._on_failure(reason)
                    for p in batch:
                        if self._recent.get(p.webhook_id) is p.done:
                            self._forget(p.webhook_id)  # not stored: a retry must be stored
                        if not p.done.done():
                            p.done.set_exception(failure)
                    continue
                for p in batch:
                    if self._recent.get(p.webhook_id) is p.done:
                        self._recent[p.webhook_id] = None
                    if not p.done.done():
                        p.done.set_result(None)
                if self._on_flush is not None:
                    self._on_flush(len(batch), time.perf_counter() - started)
        finally:
            self._flusher = None

    async def aclose(self) -> None:
        """Finish the in-flight and pending batches, then close the open segment."""
        self._closed = True
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_segment)
        self._executor.shutdown(wait=True)

    # --- writer-thread side -----------------------------------------------------------------------------

    def _write_batch(self, items: list[tuple[bytes, date]]) -> None:
        start = 0
        while start < len(items):  # one write + fsync per run of same-day records (almost always one run)
            day = items[start][1]
            end = start
            while end < len(items) and items[end][1] == day:
                end += 1
            self._write_run(day, b"".join(line for line, _ in items[start:end]))
            start = end

    def _write_run(self, day: date, data: bytes) -> None:
        segment = self._segment_for(day, len(data))
        try:
            view = memoryview(data)
            while view:
                written = self._write(segment.fd, view)
                view = view[written:]
            self._fsync(segment.fd)
        except OSError:
            self._abandon(segment)
            raise
        segment.size += len(data)

    def _segment_for(self, day: date, incoming: int) -> _Segment:
        segment = self._segment
        if segment is not None and (
            segment.day != day
            or (segment.size > 0 and segment.size + incoming > self._max_bytes)
            or self._clock() - segment.opened_at >= self._max_age
        ):
            self._close_segment()
            segment = None
        if segment is None:
            segment = self._open_segment(day)
        return segment

    def _open_segment(self, day: date) -> _Segment:
        directory = segment_dir(self.root, day)
        if not directory.is_dir():
            created = _make_dirs(directory)
            for parent in {p.parent for p in created}:
                _fsync_dir(parent)
        while True:
            self._seq += 1
            path = segment_path(self.root, day, self.writer, self._seq)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                continue
            break
        try:
            _fsync_dir(directory)
        except OSError:
            os.close(fd)
            raise
        self._segment = _Segment(path, fd, day, self._clock())
        self.segments.append(path)
        return self._segment

    def _close_segment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is not None:
            os.close(segment.fd)

    def _abandon(self, segment: _Segment) -> None:
        """After a failed write or fsync the file may end in a partial line and its page cache is suspect:
        close it and never write to it again. It is not truncated: a reader may already have consumed lines
        past the last acknowledged byte, and files only ever grow. Those unacknowledged lines are duplicates
        of Whop's retry at worst, which downstream dedupe (by webhook id) absorbs; a partial tail has no
        newline, so no reader ever takes it. A file the failure left empty is removed."""
        self._segment = None
        empty = False
        with contextlib.suppress(OSError):
            empty = segment.size == 0 and os.fstat(segment.fd).st_size == 0
        with contextlib.suppress(OSError):
            os.close(segment.fd)
        if empty:  # nothing in it: remove it, so failing writes (a full disk) do not leave a file each
            with contextlib.suppress(OSError):
                segment.path.unlink()
                self.segments.remove(segment.path)


def _make_dirs(directory: Path) -> list[Path]:
    """``mkdir -p`` returning the directories it created, top first (their parents need an fsync)."""
    missing: list[Path] = []
    probe = directory
    while not probe.is_dir():
        missing.append(probe)
        probe = probe.parent
    created: list[Path] = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            if not path.is_dir():
                raise
            continue
        created.append(path)
    return created


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
