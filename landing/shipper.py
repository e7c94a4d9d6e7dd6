"""The shipper: what this host's raw segments and quarantine files gained, uploaded to the object store.

The acknowledgement does not wait for it: a 200 still means "fsync'd on this host's disk" (the raw store's
group commit). Every ``MEMBERPULSE_SHIP_INTERVAL_SECONDS`` a background thread uploads the whole lines each
file gained since the last ship as one immutable chunk object (layout: :mod:`memberpulse.contracts.raw_chunks`).
A store that is slow or gone only makes the shipper fall behind — each request has its own bounded timeout and
the request path never touches the store — and :attr:`Shipper.status` says how far behind.

What is "not yet shipped" is learned from the store itself: at start the shipper lists the prefixes of every
writer found on the local disk (the chunks' keys say which bytes they hold), so the segments of a process that
died (SIGKILL, power loss) are shipped by the next process started on the same disk. Files of other writers are
looked at every ``foreign_every`` passes only (a live process on the same disk ships its own; a dead one's do
not grow). Recovery ships its own segment with :func:`ship_files` before it reports success.
"""

from __future__ import annotations

import glob
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from memberpulse.contracts.raw_chunks import (
    ChunkKind,
    archived_key,
    chunk_key,
    parse_chunk_key,
    split_file_name,
    writer_marker,
    writer_prefix,
)
from memberpulse.contracts.raw_record import SEGMENT_GLOB, segment_day
from memberpulse.errors import MemberpulseError
from memberpulse.storage import ObjectStore

log = logging.getLogger("memberpulse.landing.shipper")

#: Largest chunk object: a shipper that fell behind (a store outage) catches up in pieces of this size.
MAX_CHUNK_BYTES: Final = 8 * 1024 * 1024
#: How often a replica looks for its segments a worker has archived (a HEAD per segment past the retention).
TIDY_EVERY_SECONDS: Final = 3600.0
#: How long another writer's file must be unchanged before this process ships it (after its first pass).
FOREIGN_QUIET_SECONDS: Final = 10.0
#: What a compacted file counts as shipped up to: all of it, whatever is still on this disk.
ARCHIVED_END: Final = 2**62


@dataclass(frozen=True)
class ShipSource:
    """One local directory of append-only files and the chunk kind they are shipped as."""

    kind: ChunkKind
    root: Path
    pattern: str


@dataclass
class ShipStatus:
    """How far shipping lags, for the health answer and the metrics."""

    #: When (monotonic) the last pass that finished started: every line acknowledged before then is shipped.
    caught_up_at: float
    chunks: int = 0
    bytes: int = 0
    last_error: str | None = None

    def lag_seconds(self, now: float) -> float:
        """How old the oldest acknowledged line that may not be in the store yet can be, at most."""
        return max(0.0, now - self.caught_up_at)


@dataclass
class _Shipped:
    """Per file (kind, relpath): the end of the bytes already in the store."""

    ends: dict[tuple[ChunkKind, str], int] = field(default_factory=dict)
    writers: set[str] = field(default_factory=set)  # writers whose marker is written
    listed: set[tuple[ChunkKind, str]] = field(default_factory=set)  # (kind, writer) prefixes listed


def sources_for(landing_dir: Path, quarantine_dir: Path) -> list[ShipSource]:
    return [ShipSource("landing", landing_dir, SEGMENT_GLOB), ShipSource("quarantine", quarantine_dir, "*.ndjson")]


class Shipper:
    """Uploads what local files gained; :meth:`ship_once` is one pass, :meth:`start` runs passes on a thread."""

    def __init__(
        self,
        store: ObjectStore,
        sources: list[ShipSource],
        *,
        writer: str,
        interval_seconds: float,
        foreign_every: int = 30,
        retention_days: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.sources = sources
        self.writer = writer
        self.interval = interval_seconds
        self._foreign_every = max(1, foreign_every)
        self._retention_days = retention_days
        self._clock = clock
        self._shipped = _Shipped()
        self._passes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one pass at a time (the thread's, or the final one at shutdown)
        self.status = ShipStatus(caught_up_at=clock())
        #: Called (on the shipper's thread) with the chunks a pass uploaded, when it uploaded any: the run signal,
        #: since a worker on another host reads only what is shipped.
        self.on_shipped: Callable[[int], object] | None = None

    # --- the thread ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="raw-shipper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop passing; the thread makes one last pass, waited for up to ``timeout`` (a store that does not
        answer must not hold the shutdown: what is left is shipped by the next start on this disk)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        tidy_every = max(1, round(TIDY_EVERY_SECONDS / self.interval))
        while not self._stop.is_set():
            if self._retention_days is not None and self._passes % tidy_every == 0:
                self._quietly(lambda: self.drop_archived(datetime.now(UTC)))
            self._pass_quietly(everything=self._passes % self._foreign_every == 0)
            self._stop.wait(self.interval)
        self._pass_quietly(everything=False)

    def _pass_quietly(self, *, everything: bool) -> None:
        self._quietly(lambda: self.ship_once(everything=everything))

    def _quietly(self, work: Callable[[], object]) -> None:
        try:
            work()
        except MemberpulseError as exc:  # the store is down or refusing: try again next pass
            self.status.last_error = exc.message
            log.warning("shipping raw files to the object store failed (will retry): %s", exc.message)
        except OSError as exc:
            self.status.last_error = exc.strerror or type(exc).__name__
            log.warning("shipping raw files failed reading the local disk (will retry): %s", exc)

    def drop_archived(self, now: datetime) -> list[str]:
        """Remove this disk's segments that a worker compacted elsewhere: past the retention window (by their
        day) and with their tombstone in the store. Without this a replica's disk would keep every segment,
        since compaction runs on a worker's cache. Returns the removed paths (relative)."""
        assert self._retention_days is not None
        cutoff = (now - timedelta(days=self._retention_days + 1)).date()
        removed = []
        for source in (s for s in self.sources if s.kind == "landing"):
            for relpath, _ in _local_files(source, self.writer, everything=True, quiet_since=None):
                day = segment_day(relpath)
                if day is None or day >= cutoff or self.store.head(archived_key("landing", relpath)) is None:
                    continue
                (source.root / relpath).unlink(missing_ok=True)
                self._shipped.ends.pop(("landing", relpath), None)
                removed.append(relpath)
        if removed:
            log.info("removed %d local segment(s) a worker archived in the object store", len(removed))
        return removed

    # --- one pass -----------------------------------------------------------------------------------------

    def ship_once(self, *, everything: bool = True) -> ShipStatus:
        """Ship what the local files gained: this writer's always, every writer's with ``everything``."""
        with self._lock:
            started, chunks_before = self._clock(), self.status.chunks
            self._passes += 1
            # After the first pass, another writer's file is shipped only once it has been quiet for a while: a
            # live process on this disk (another worker of this landing) ships its own.
            quiet_since = None if self._passes == 1 else time.time() - FOREIGN_QUIET_SECONDS
            for source in self.sources:
                for relpath, size in _local_files(source, self.writer, everything=everything, quiet_since=quiet_since):
                    self.ship_file(source, relpath, size)
            self._forget_gone()
            self.status.last_error = None
            self.status.caught_up_at = started
            if self.on_shipped is not None and self.status.chunks > chunks_before:
                self.on_shipped(self.status.chunks - chunks_before)
            return self.status

    def ship_file(self, source: ShipSource, relpath: str, size: int) -> None:
        """Ship the first ``size`` bytes of ``relpath`` up to their last newline (an open line waits)."""
        key = (source.kind, relpath)
        if key not in self._shipped.ends:
            self._learn_writer(source.kind, relpath)
        shipped = self._shipped.ends.get(key, 0)
        while shipped < size:
            data = _whole_lines(source.root / relpath, shipped, min(size - shipped, MAX_CHUNK_BYTES))
            if not data:
                break  # a line still being written, or a torn tail: not acknowledged, never shipped
            shipped = self._put_chunk(source.kind, relpath, shipped, data)
            self._shipped.ends[key] = shipped

    def _put_chunk(self, kind: ChunkKind, relpath: str, start: int, data: bytes) -> int:
        """Upload one chunk; returns the end of what the store now holds from ``start``."""
        key = chunk_key(kind, relpath, start)
        if self.store.put_new(key, data) is None:  # another shipper took this range first: it holds whole lines
            info = self.store.head(key)
            return start + (info.size if info is not None and info.size else len(data))
        self.status.chunks += 1
        self.status.bytes += len(data)
        return start + len(data)

    def _learn_writer(self, kind: ChunkKind, relpath: str) -> None:
        """Once per writer: mark it as having chunks (what a reader lists), and learn from its prefix which
        bytes of its files are in the store already (all of them after a restart on the same disk)."""
        parts = split_file_name(relpath.rsplit("/", 1)[-1])
        if parts is None or (kind, parts[0]) in self._shipped.listed:
            return
        writer = parts[0]
        if writer not in self._shipped.writers:
            self.store.put_new(writer_marker(writer), b"")
            self._shipped.writers.add(writer)
        for info in self.store.list(writer_prefix(kind, writer)):
            ref = parse_chunk_key(info.key)
            if ref is not None:
                end = ARCHIVED_END if ref.archived else ref.start + info.size
                self._shipped.ends[(kind, ref.relpath)] = max(end, self._shipped.ends.get((kind, ref.relpath), 0))
        self._shipped.listed.add((kind, writer))

    def _forget_gone(self) -> None:
        """Files removed locally (compacted, rotated) need no memory of what was shipped of them."""
        roots = {s.kind: s.root for s in self.sources}
        for kind, relpath in list(self._shipped.ends):
            if not (roots[kind] / relpath).exists():
                del self._shipped.ends[(kind, relpath)]


def _local_files(
    source: ShipSource, own_writer: str, *, everything: bool, quiet_since: float | None
) -> list[tuple[str, int]]:
    """(relpath, size) of the writer files of ``source``: ``own_writer``'s, and with ``everything`` other
    writers' too — when ``quiet_since`` (Unix time) is given, only those unchanged since then."""
    if not source.root.is_dir():
        return []
    pattern = (
        source.pattern if everything else source.pattern.replace("*.ndjson", f"{glob.escape(own_writer)}-*.ndjson")
    )
    found = []
    for path in sorted(source.root.glob(pattern)):
        parts = split_file_name(path.name)
        if parts is None or (not everything and parts[0] != own_writer):
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue  # removed since the listing (compacted, rotated)
        if parts[0] != own_writer and quiet_since is not None and stat.st_mtime > quiet_since:
            continue
        found.append((path.relative_to(source.root).as_posix(), stat.st_size))
    return found


def _whole_lines(path: Path, start: int, limit: int) -> bytes:
    """About ``limit`` bytes of ``path`` from ``start``, cut after the last newline (b"" when there is none);
    a single line longer than ``limit`` is read whole."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(limit)
            while data and b"\n" not in data:
                more = fh.read(limit)
                if not more:
                    break
                data += more
    except FileNotFoundError:
        return b""
    return data[: data.rfind(b"\n") + 1]


def ship_files(store: ObjectStore, source: ShipSource, relpaths: Iterable[str]) -> int:
    """Ship whole files now (recovery's segment and quarantine file); returns the chunks written. Raises
    StorageUnavailable/ConfigError when the store does not take them."""
    shipper = Shipper(store, [source], writer="", interval_seconds=0)
    for relpath in relpaths:
        size = (source.root / relpath).stat().st_size
        shipper.ship_file(source, relpath, size)
    return shipper.status.chunks
