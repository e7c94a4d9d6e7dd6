"""Read what the landing appended since the last checkpoint.

Each landing process owns its segment files and only ever appends, so a byte offset per file is a complete
checkpoint. Only whole lines count: bytes after the last newline belong to a write still in flight (or to a
writer that died mid-line, which never acknowledged that record) and are left for later — except in a
*sealed* segment (its day and its last write older than the compaction cutoff: no writer will ever finish that
line), whose torn tail is read as a last, unterminated line, so it becomes a reject and the segment can go.

An offset is only a checkpoint while the bytes before it are the ones read. A segment shorter than its offset,
or whose byte before the offset is not a newline, changed after it was ingested (a restore from a backup, a
disk repair, a truncation followed by new appends): :func:`check_offsets` names it and the segment is read again
from its start (the reconcile's event log drops webhook ids it already holds, so nothing counts twice). Bytes
changed in place, the size unchanged, escape that cheap check; :class:`Checksums` keeps a CRC-32 of exactly the
bytes read from each segment, so compaction can check them before it archives the segment.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from memberpulse.contracts.quarantine import QUARANTINE_GLOB
from memberpulse.contracts.raw_record import SEGMENT_GLOB, segment_day


@dataclass(frozen=True)
class RawChunk:
    """New complete lines of one segment: ``data`` covers bytes ``[start, end)`` of ``relpath``."""

    relpath: str
    start: int
    end: int
    data: bytes


@dataclass(frozen=True)
class RawBatch:
    chunks: list[RawChunk] = field(default_factory=list)

    @property
    def new_offsets(self) -> dict[str, int]:
        return {c.relpath: c.end for c in self.chunks}

    @property
    def nbytes(self) -> int:
        return sum(len(c.data) for c in self.chunks)

    def joined(self) -> bytes:
        return b"".join(c.data for c in self.chunks)


log = logging.getLogger("memberpulse.raw")

RAW_SEGMENTS = SEGMENT_GLOB
QUARANTINE_FILES = QUARANTINE_GLOB


def list_segments(landing_dir: Path, pattern: str = RAW_SEGMENTS) -> list[Path]:
    """Every raw segment, oldest partition first (``dt=YYYY-MM-DD`` sorts by date)."""
    if not landing_dir.is_dir():
        return []
    return sorted(p for p in landing_dir.glob(pattern) if p.is_file())


# Big enough that per-slice overhead vanishes, small enough that a first run over months of history never
# holds it all in memory at once.
SLICE_BYTES = 64 * 1024 * 1024


def sealed_cutoff(retention_days: float, now: datetime | None = None) -> datetime:
    """Segments whose day and last write lie before this moment are sealed (and may be compacted)."""
    return (now or datetime.now(UTC)) - timedelta(days=retention_days)


def is_sealed(rel: str, mtime: float, cutoff: datetime) -> bool:
    """No writer appends to ``rel`` again: the landing never writes a past day's segment, and this one's day
    and its last write are both older than ``cutoff``."""
    day = segment_day(rel)
    if day is None:
        return False
    day_end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    return day_end <= cutoff and datetime.fromtimestamp(mtime, UTC) <= cutoff


@dataclass(frozen=True)
class OffsetCheck:
    """:func:`check_offsets`' answer: the offsets to read from (damaged segments from 0) and what was wrong."""

    offsets: dict[str, int]
    warnings: list[str] = field(default_factory=list)


def check_offsets(landing_dir: Path, offsets: Mapping[str, int]) -> OffsetCheck:
    """``offsets`` with every segment that changed after it was ingested reset to 0, each named in a warning.

    Cheap on purpose (it runs every run): a stat per segment, and one byte read only where the segment grew past
    its offset or shrank below it. A segment whose size equals its offset has nothing new to read.
    """
    checked, warnings = dict(offsets), []
    for rel, committed in offsets.items():
        try:
            size = os.stat(landing_dir / rel).st_size
        except FileNotFoundError:
            continue  # compacted, or removed: nothing to read
        if size == committed or committed == 0:
            continue
        problem = _damage(landing_dir / rel, size, committed)
        if problem is not None:
            checked[rel] = 0
            warnings.append(
                f"raw segment {rel} changed after it was ingested: {problem} (a restore from a backup, a disk "
                "repair?); it is read again from its start and records already ingested are not counted twice; "
                "if records are missing, restore the segment from a backup and run `memberpulse run --full-refresh`"
            )
            log.warning(warnings[-1])  # in the log too, whatever the caller shows
    return OffsetCheck(checked, warnings)


def _damage(path: Path, size: int, committed: int) -> str | None:
    if size < committed:
        return f"it is {size} bytes, shorter than the {committed} bytes already ingested"
    with open(path, "rb") as fh:
        fh.seek(committed - 1)
        before = fh.read(1)
    if before != b"\n":
        return f"the byte before offset {committed} (of {size} bytes) is not the end of a line"
    return None


class Checksums:
    """The CRC-32 (``zlib.crc32``) of the bytes read from each segment, from its first byte to where reading
    stands, chained chunk by chunk: reading never goes back over bytes, and the checksum still covers them.

    Start it from the offsets reading starts at and the checksums known for them (a segment read from 0 needs
    none); pass the chunks through :meth:`through`. A segment whose bytes before its offset have no known
    checksum (read by a release that kept none) stays unknown until it is read from its start again.
    """

    def __init__(self, offsets: Mapping[str, int], known: Mapping[str, int]) -> None:
        self._at = {rel: (start, known.get(rel, 0)) for rel, start in offsets.items() if start == 0 or rel in known}

    def through(self, chunks: Iterable[RawChunk]) -> Iterator[RawChunk]:
        """``chunks`` unchanged, each one's bytes added to its segment's checksum on the way."""
        for chunk in chunks:
            self.add(chunk)
            yield chunk

    def add(self, chunk: RawChunk) -> None:
        end, crc = (0, 0) if chunk.start == 0 else self._at.get(chunk.relpath, (None, 0))
        if end == chunk.start:
            self._at[chunk.relpath] = (chunk.end, zlib.crc32(chunk.data, crc))
        else:  # not contiguous with what was checksummed (never, reading forward): unknown, not wrong
            self._at.pop(chunk.relpath, None)

    def at(self, offsets: Mapping[str, int]) -> dict[str, int]:
        """The checksum of each segment's bytes ``0 .. offsets[segment]``, where exactly those were checksummed."""
        return {rel: self._at[rel][1] for rel, end in offsets.items() if self._at.get(rel, (None, 0))[0] == end}


def file_checksum(landing_dir: Path, rel: str, *, block_bytes: int = 1 << 20) -> tuple[int, int]:
    """(bytes, CRC-32) of one file (``rel`` under ``landing_dir``) as it is now, read in blocks."""
    size, crc = 0, 0
    with open(landing_dir / rel, "rb") as fh:
        while block := fh.read(block_bytes):
            size, crc = size + len(block), zlib.crc32(block, crc)
    return size, crc


def iter_new(
    landing_dir: Path,
    offsets: Mapping[str, int],
    pattern: str = RAW_SEGMENTS,
    *,
    slice_bytes: int = SLICE_BYTES,
    sealed_before: datetime | None = None,
) -> Iterator[RawChunk]:
    """Complete lines appended to each file matching ``pattern`` after ``offsets`` (relative path → byte
    offset), in slices of about ``slice_bytes``; with ``sealed_before``, the torn tail of a segment sealed by
    then too (:func:`is_sealed`). The landing's quarantine files follow the same append-only rule
    (``QUARANTINE_FILES``)."""
    for path in list_segments(landing_dir, pattern):
        rel = path.relative_to(landing_dir).as_posix()
        start = offsets.get(rel, 0)
        final = sealed_before is not None and _sealed_path(path, rel, sealed_before)
        yield from iter_file(landing_dir, rel, start, slice_bytes=slice_bytes, final=final)


def _sealed_path(path: Path, rel: str, cutoff: datetime) -> bool:
    try:
        return is_sealed(rel, path.stat().st_mtime, cutoff)
    except FileNotFoundError:
        return False


def iter_file(
    landing_dir: Path, rel: str, start: int = 0, *, slice_bytes: int = SLICE_BYTES, final: bool = False
) -> Iterator[RawChunk]:
    """Complete lines of one file (``rel`` under ``landing_dir``) from byte ``start`` on, in slices; with
    ``final`` (the file is sealed), its torn tail as well, as the last chunk's unterminated last line."""
    try:
        fh = open(landing_dir / rel, "rb")  # noqa: SIM115 - closed below; a file removed since listing is skipped
    except FileNotFoundError:
        return  # the landing removes a segment a failed first write left empty
    with fh:
        fh.seek(start)
        pending = b""
        while True:
            data = fh.read(slice_bytes)
            if not data:
                break
            data = pending + data
            cut = data.rfind(b"\n") + 1
            pending = data[cut:]  # a line longer than a slice, or the torn tail of a write in flight
            if cut:
                yield RawChunk(relpath=rel, start=start, end=start + cut, data=data[:cut])
                start += cut
        if final and pending:
            yield RawChunk(relpath=rel, start=start, end=start + len(pending), data=pending)


def read_new(landing_dir: Path, offsets: Mapping[str, int], pattern: str = RAW_SEGMENTS) -> RawBatch:
    """All of :func:`iter_new` at once (for small inputs such as the quarantine log)."""
    return RawBatch(list(iter_new(landing_dir, offsets, pattern)))


def landed_since(landing_dir: Path, offsets: Mapping[str, int], pattern: str = RAW_SEGMENTS) -> bool:
    """Whether any raw segment has bytes past ``offsets``: a stat per segment, nothing read."""
    for path in list_segments(landing_dir, pattern):
        if path.stat().st_size > offsets.get(path.relative_to(landing_dir).as_posix(), 0):
            return True
    return False
