"""Read what the landing appended since the last checkpoint.

Each landing process owns its segment files and only ever appends, so a byte offset per file is a complete
checkpoint. Only whole lines count: bytes after the last newline belong to a write still in flight (or to a
writer that died mid-line, which never acknowledged that record) and are left for later.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from memberpulse.contracts.quarantine import QUARANTINE_GLOB
from memberpulse.contracts.raw_record import SEGMENT_GLOB


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


def iter_new(
    landing_dir: Path, offsets: Mapping[str, int], pattern: str = RAW_SEGMENTS, *, slice_bytes: int = SLICE_BYTES
) -> Iterator[RawChunk]:
    """Complete lines appended to each file matching ``pattern`` after ``offsets`` (relative path → byte
    offset), in slices of about ``slice_bytes``. The landing's quarantine files follow the same append-only
    rule (``QUARANTINE_FILES``)."""
    for path in list_segments(landing_dir, pattern):
        rel = path.relative_to(landing_dir).as_posix()
        yield from iter_file(landing_dir, rel, offsets.get(rel, 0), slice_bytes=slice_bytes)


def iter_file(landing_dir: Path, rel: str, start: int = 0, *, slice_bytes: int = SLICE_BYTES) -> Iterator[RawChunk]:
    """Complete lines of one file (``rel`` under ``landing_dir``) from byte ``start`` on, in slices."""
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


def read_new(landing_dir: Path, offsets: Mapping[str, int], pattern: str = RAW_SEGMENTS) -> RawBatch:
    """All of :func:`iter_new` at once (for small inputs such as the quarantine log)."""
    return RawBatch(list(iter_new(landing_dir, offsets, pattern)))


def landed_since(landing_dir: Path, offsets: Mapping[str, int], pattern: str = RAW_SEGMENTS) -> bool:
    """Whether any raw segment has bytes past ``offsets``: a stat per segment, nothing read."""
    for path in list_segments(landing_dir, pattern):
        if path.stat().st_size > offsets.get(path.relative_to(landing_dir).as_posix(), 0):
            return True
    return False
