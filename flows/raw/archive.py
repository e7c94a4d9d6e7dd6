"""Raw history that does not grow without bound: old landing segments compacted into one Parquet file per day.

A segment is compacted only when nothing can still change it or still needs it as NDJSON: its day partition
and its last write are older than the retention window (the landing never appends to a past day's segment),
and the committed reconcile manifest has read it to its last byte (offset == size, so it ends on a newline).
Lines are kept byte-exact with their segment name and offset (layout: ``memberpulse.contracts.raw_record``).

Only the bytes that were ingested are archived: the manifest keeps a CRC-32 of exactly the bytes read from each
segment (``reader.Checksums``), and a segment whose bytes no longer have it (edited in place after ingestion,
its size unchanged) is neither archived nor removed; :attr:`CompactionResult.warnings` names it with the
remedy, ``memberpulse run --full-refresh``, which reads it again as it now is (its checksum then matches, and the
next compaction archives it). A segment read before checksums were kept (format 3) is archived unchecked, as
then.

Crash safety: a day's archive file is written whole through ``fsio.atomic_target`` (the old file, if any, is
copied into the new one), and only then are its segments unlinked. A crash before the rename leaves the old
archive and every segment; a crash after it leaves segments that are also archived: readers prefer the
archive, and the next compaction unlinks them after checking the archive holds all their bytes. Archive files
are opened through :mod:`memberpulse.flows.state_codec`: one whose footer cannot be read is CorruptState
naming it (it is the only copy of its day's webhooks: the remedy is a backup).

Incremental runs never read the archive (compacted segments were fully ingested); ``--full-refresh`` reads it
through :func:`iter_history`, interleaved with the live segments in the same order as if none were compacted.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import Final

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memberpulse.contracts.checkpoints import checkpoint
from memberpulse.contracts.raw_chunks import ARCHIVE_PREFIX, archived_key, file_prefix, parse_chunk_key, split_file_name
from memberpulse.contracts.raw_record import (
    ARCHIVE_GLOB,
    RAW_ARCHIVE_SCHEMA,
    archive_path,
    raw_archive_dir,
    segment_day,
)
from memberpulse.flows.fsio import atomic_target, fsync_path
from memberpulse.flows.raw.reader import (
    Checksums,
    RawChunk,
    file_checksum,
    is_sealed,
    iter_file,
    list_segments,
    sealed_cutoff,
)
from memberpulse.flows.state_codec import RAW_ARCHIVE, open_table_file, open_table_writer
from memberpulse.storage import ObjectStore

log = logging.getLogger("memberpulse.raw_archive")

# The contract's columns as Arrow writes them: ``line`` large_binary (its offsets are the chunk's 64-bit line
# bounds, shared without a copy) and ``source_file`` plain string, as every archive file so far has them.
_ARROW_TYPES: Final[dict[pl.DataType, pa.DataType]] = {
    pl.String(): pa.string(),
    pl.Int64(): pa.int64(),
    pl.Binary(): pa.large_binary(),
}
_SCHEMA: Final = pa.schema([(name, _ARROW_TYPES[dtype]) for name, dtype in RAW_ARCHIVE_SCHEMA.items()])
_SOURCE_COLUMN: Final = _SCHEMA.get_field_index("source_file")


@dataclass(frozen=True)
class Segment:
    relpath: str
    path: Path
    size: int


@dataclass
class CompactionResult:
    segments: int = 0
    bytes: int = 0
    days: list[str] = field(default_factory=list)
    #: Segments found in the archive already (a crash between write and unlink) whose bytes did not match.
    kept: list[str] = field(default_factory=list)
    #: Temporary files a compaction killed mid-write left in the archive directory, removed.
    removed_tmp: list[str] = field(default_factory=list)
    #: Segments whose bytes are not the ones ingested (edited after ingestion): neither archived nor removed.
    changed: list[str] = field(default_factory=list)
    #: What a person must look at: each changed segment, with the remedy (the run's report carries them).
    warnings: list[str] = field(default_factory=list)

    def not_as_ingested(self, relpath: str, problem: str) -> None:
        self.changed.append(relpath)
        self.warnings.append(
            f"raw segment {relpath} is not what was ingested from it: {problem}; it is neither archived nor "
            "removed. Run `memberpulse run --full-refresh`: it reads the segment again as it now is (restore it "
            "from a backup first if the change was not meant), and the next compaction archives it"
        )
        log.warning(self.warnings[-1])  # in the log too, whatever the caller shows


class _ChangedWhileArchived(Exception):
    """A segment's bytes changed between their check and their copy into the archive: the copy is dropped."""

    def __init__(self, relpath: str) -> None:
        super().__init__(relpath)
        self.relpath = relpath


# (bytes, CRC-32) of a segment: as the archive holds it, or as ingested; the CRC None where it is not known.
Held = tuple[int, int | None]


# --- which segments may go ---------------------------------------------------------------------------------


def compactable(
    landing_dir: Path, committed: Mapping[str, int], *, retention_days: float, now: datetime | None = None
) -> dict[date, list[Segment]]:
    """Segments sealed (old enough) and fully committed, by day."""
    cutoff = sealed_cutoff(retention_days, now)
    days: dict[date, list[Segment]] = {}
    for path in list_segments(landing_dir):
        rel = path.relative_to(landing_dir).as_posix()
        day = segment_day(rel)
        stat = path.stat()
        if day is not None and is_sealed(rel, stat.st_mtime, cutoff) and committed.get(rel, 0) == stat.st_size:
            days.setdefault(day, []).append(Segment(rel, path, stat.st_size))
    return days


# --- compaction -------------------------------------------------------------------------------------------


def compact(
    landing_dir: Path,
    committed: Mapping[str, int],
    checksums: Mapping[str, int],
    *,
    retention_days: float,
    now: datetime | None = None,
    remote: ObjectStore | None = None,
) -> CompactionResult:
    """Move every compactable segment into its day's archive file, then remove the NDJSON. The caller holds
    the reconcile lock and passes the committed manifest's offsets and checksums (a segment without one is
    archived unchecked). With ``remote`` (the storage URL set), the day's archive file is uploaded before
    anything is deleted, then each segment's chunks are replaced by a tombstone, then the local segment goes
    (:func:`_forget_remote`)."""
    archive_dir = raw_archive_dir(landing_dir)
    result = CompactionResult(removed_tmp=remove_stale_tmp(archive_dir))
    for day, segments in sorted(compactable(landing_dir, committed, retention_days=retention_days, now=now).items()):
        target = archive_path(archive_dir, day)
        try:
            held = _archive_day(landing_dir, target, segments, checksums, result)
        except _ChangedWhileArchived as changed:  # nothing of the day written or removed; checked again next run
            result.not_as_ingested(changed.relpath, "its bytes changed while they were being archived")
            continue
        checkpoint("archive_before_unlink")
        if remote is not None and target.exists():
            remote.put(f"{ARCHIVE_PREFIX}/{target.name}", target)
        for seg in segments:
            if seg.relpath not in result.changed and _held_whole(seg, held, checksums, result, target):
                if remote is not None:
                    _forget_remote(remote, seg.relpath)
                seg.path.unlink(missing_ok=True)
                result.segments += 1
                result.bytes += seg.size
        _tidy_partition(landing_dir / f"dt={day.isoformat()}")
        result.days.append(day.isoformat())
    return result


def _archive_day(
    landing_dir: Path, target: Path, segments: list[Segment], checksums: Mapping[str, int], result: CompactionResult
) -> dict[str, Held]:
    """Write the day's segments not archived yet whose bytes are still the ones ingested into its archive file;
    what the archive then holds of each segment."""
    already = _archived_sources(target)
    held: dict[str, Held] = {s.relpath: (0, 0) for s in segments if not s.size}
    held |= _archived_bytes(target, only={s.relpath for s in segments} & already)
    fresh = [s for s in segments if s.relpath not in already and s.size]
    intact = [s for s in fresh if _as_ingested(landing_dir, s, checksums, result)]
    if intact:
        held |= _write_day(landing_dir, target, intact, checksums)
    return held


def _as_ingested(landing_dir: Path, seg: Segment, checksums: Mapping[str, int], result: CompactionResult) -> bool:
    """Whether the segment's bytes still have the checksum of the bytes ingested (unknown: trusted, as before
    checksums were kept). Read before the archive is written, so a changed segment costs no archive rewrite."""
    expected = checksums.get(seg.relpath)
    if expected is None:
        return True
    size, now = file_checksum(landing_dir, seg.relpath)
    if (size, now) == (seg.size, expected):
        return True
    said = f"its {size} bytes have CRC-32 {now:08x}"
    result.not_as_ingested(seg.relpath, f"{said}, the {seg.size} bytes ingested had {expected:08x} (edited in place?)")
    return False


def _held_whole(
    seg: Segment, held: Mapping[str, Held], checksums: Mapping[str, int], result: CompactionResult, target: Path
) -> bool:
    """Whether the archive holds exactly the segment's bytes as ingested, so the NDJSON may go."""
    size, crc = held.get(seg.relpath, (None, None))
    if size != seg.size:
        result.kept.append(seg.relpath)  # never delete bytes the archive does not hold
        log.warning("raw archive %s does not hold all of %s; the segment is kept", target, seg.relpath)
        return False
    expected = checksums.get(seg.relpath)
    if expected is not None and crc != expected:  # archived before checksums were checked, or another file's
        result.not_as_ingested(seg.relpath, f"the archive {target.name} holds other bytes of it than were ingested")
        return False
    return True


def _forget_remote(remote: ObjectStore, relpath: str) -> None:
    """The segment's chunks in the store, now that the uploaded archive holds its bytes: a tombstone first (so
    a landing restarted on the disk that wrote it never ships it again), then the chunks. The local segment is
    removed after this: a crash in between leaves it to the next compaction, which finds it archived."""
    remote.put(archived_key("landing", relpath), b"")
    writer_seq = split_file_name(relpath.rsplit("/", 1)[-1])
    if writer_seq is None:
        return
    for info in list(remote.list(file_prefix("landing", *writer_seq))):
        ref = parse_chunk_key(info.key)
        if ref is not None and not ref.archived:
            remote.delete(info.key)


def remove_stale_tmp(archive_dir: Path) -> list[str]:
    """Delete the temporary files (``atomic_target``'s ``.tmp-*``) a compaction killed mid-write left behind.
    Only compaction writes here, and it runs under the reconcile lock the caller holds, so none is in use."""
    removed = []
    for tmp in sorted(archive_dir.glob(".tmp-*")) if archive_dir.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp.name)
            log.info("removed %s, left by a compaction that was killed mid-write", tmp)
    return removed


def _write_day(landing_dir: Path, target: Path, fresh: list[Segment], checksums: Mapping[str, int]) -> dict[str, Held]:
    """The day's archive: its previous row groups plus ``fresh`` segments, merged in segment order. Returns
    the bytes and checksum written per fresh segment; a segment whose bytes no longer have its checksum in
    ``checksums`` drops the whole file (:class:`_ChangedWhileArchived`)."""
    previous = open_table_file(target, RAW_ARCHIVE) if target.exists() else None
    items: list[tuple[PurePosixPath, int | Segment]] = [(PurePosixPath(s.relpath), s) for s in fresh]
    if previous is not None:
        items += [(PurePosixPath(rel), i) for i, rel in enumerate(_row_group_sources(previous))]
    items.sort(key=lambda item: (item[0], isinstance(item[1], Segment)))
    sums = Checksums({s.relpath: 0 for s in fresh}, {})
    written = {s.relpath: 0 for s in fresh}
    try:
        with (
            atomic_target(target) as tmp,
            open_table_writer(tmp, _SCHEMA, write_statistics=["source_file", "source_offset"]) as writer,
        ):
            for _, item in items:
                if isinstance(item, Segment):
                    # sealed: its torn tail too
                    for chunk in sums.through(iter_file(landing_dir, item.relpath, final=True)):
                        table = _lines_table(chunk)
                        writer.write_table(table, row_group_size=table.num_rows)
                        written[item.relpath] += len(chunk.data)
                    expected = checksums.get(item.relpath)
                    if expected is not None and sums.at(written).get(item.relpath) != expected:
                        raise _ChangedWhileArchived(item.relpath)
                else:
                    assert previous is not None
                    group = previous.read_row_group(item)
                    writer.write_table(group.cast(_SCHEMA), row_group_size=max(group.num_rows, 1))
    finally:
        if previous is not None:
            previous.close()
    crcs = sums.at(written)
    return {rel: (size, crcs.get(rel)) for rel, size in written.items()}


def _lines_table(chunk: RawChunk) -> pa.Table:
    """One chunk of whole lines as archive rows; the line values share the chunk's buffer (no copy per line)."""
    data = chunk.data
    bounds = [0]
    cut = data.find(b"\n")
    while cut >= 0:  # str.find runs at memchr speed: far faster here than a vectorised compare + nonzero
        bounds.append(cut + 1)
        cut = data.find(b"\n", cut + 1)
    if bounds[-1] < len(data):  # a sealed segment's torn tail: kept as its last, unterminated line
        bounds.append(len(data))
    count = len(bounds) - 1
    offsets = pa.array(bounds, pa.int64())
    line_type, file_type = _SCHEMA.field("line").type, _SCHEMA.field("source_file").type
    lines = pa.Array.from_buffers(line_type, count, [None, offsets.buffers()[1], pa.py_buffer(data)])
    starts = pc.add(offsets.slice(0, count), chunk.start)
    files = pa.array([chunk.relpath], file_type).take(pa.array([0] * count, pa.int32()))
    return pa.table({"source_file": files, "source_offset": starts, "line": lines}, schema=_SCHEMA)


def _tidy_partition(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (a segment kept) or already gone
        directory.rmdir()
    with contextlib.suppress(OSError):
        fsync_path(directory.parent)


# --- reading ----------------------------------------------------------------------------------------------


def _row_group_sources(pf: pq.ParquetFile) -> list[str]:
    """The segment each row group holds (one per group, from the statistics; the column when absent)."""
    sources = []
    for i in range(pf.metadata.num_row_groups):
        stats = pf.metadata.row_group(i).column(_SOURCE_COLUMN).statistics
        if stats is not None and stats.has_min_max and stats.min == stats.max:
            sources.append(str(stats.min))
        else:
            sources.append(str(pf.read_row_group(i, columns=["source_file"]).column(0)[0].as_py()))
    return sources


def _archived_sources(target: Path) -> set[str]:
    if not target.exists():
        return set()
    with open_table_file(target, RAW_ARCHIVE) as pf:
        return set(_row_group_sources(pf))


def _archived_bytes(target: Path, *, only: set[str]) -> dict[str, Held]:
    """Bytes and checksum one archive file holds of each segment in ``only`` (read only when a compaction was
    cut short)."""
    held: dict[str, int] = {}
    if not only:
        return {}
    sums = Checksums(dict.fromkeys(only, 0), {})
    with open_table_file(target, RAW_ARCHIVE) as pf:
        for i, rel in enumerate(_row_group_sources(pf)):
            if rel in only:
                chunk = _row_group_chunk(pf, i, rel)
                sums.add(chunk)
                held[rel] = held.get(rel, 0) + (chunk.end - chunk.start)
    crcs = sums.at(held)
    return {rel: (size, crcs.get(rel)) for rel, size in held.items()}


def _row_group_chunk(pf: pq.ParquetFile, index: int, rel: str) -> RawChunk:
    group = pf.read_row_group(index, columns=["source_offset", "line"])
    lines = group.column("line").combine_chunks()
    bounds = pa.Array.from_buffers(pa.int64(), len(lines) + 1, [None, lines.buffers()[1]], offset=lines.offset)
    first, last = bounds[0].as_py(), bounds[len(lines)].as_py()
    data = lines.buffers()[2][first:last].to_pybytes()
    start = group.column("source_offset")[0].as_py()
    return RawChunk(relpath=rel, start=start, end=start + len(data), data=data)


def archived_segments(landing_dir: Path) -> dict[str, tuple[Path, list[int]]]:
    """Every segment in the archive: relative path → (archive file, its row groups in order)."""
    found: dict[str, tuple[Path, list[int]]] = {}
    archive_dir = raw_archive_dir(landing_dir)
    if not archive_dir.is_dir():
        return found
    for path in sorted(archive_dir.glob(ARCHIVE_GLOB)):
        with open_table_file(path, RAW_ARCHIVE) as pf:
            for i, rel in enumerate(_row_group_sources(pf)):
                found.setdefault(rel, (path, []))[1].append(i)
    return found


def iter_history(landing_dir: Path, *, sealed_before: datetime | None = None) -> Iterator[RawChunk]:
    """Every complete line ever landed: archived segments and live ones, in segment order (as
    ``raw_reader.iter_new`` from no offsets would give them had nothing been compacted), with the torn tails
    of segments sealed by ``sealed_before`` (archived ones keep theirs as their last line). A segment that is
    both archived and still on disk (a compaction interrupted before its unlink) is read once, from the
    archive."""
    archived = archived_segments(landing_dir)
    live = {p.relative_to(landing_dir).as_posix(): p for p in list_segments(landing_dir)}
    open_files: dict[Path, pq.ParquetFile] = {}
    try:
        for rel in sorted(live.keys() | archived.keys(), key=PurePosixPath):
            if rel not in archived:
                final = sealed_before is not None and is_sealed(rel, live[rel].stat().st_mtime, sealed_before)
                yield from iter_file(landing_dir, rel, final=final)
                continue
            path, groups = archived[rel]
            pf = open_files.get(path) or open_files.setdefault(path, open_table_file(path, RAW_ARCHIVE))
            for index in groups:
                yield _row_group_chunk(pf, index, rel)
    finally:
        for pf in open_files.values():
            pf.close()


def live_offsets(landing_dir: Path, offsets: Mapping[str, int]) -> dict[str, int]:
    """``offsets`` without segments that no longer exist on disk (compacted ones), so the manifest stays
    proportional to the live landing store."""
    return {rel: end for rel, end in offsets.items() if os.path.exists(landing_dir / rel)}
