"""A worker's local cache of the raw store in object storage: chunks appended to local segment files.

With ``MEMBERPULSE_STORAGE_URL`` set, the landing replicas ship their segments and quarantine files as chunk
objects (:mod:`memberpulse.contracts.raw_chunks`). Before a run reads the raw store, :func:`pull_raw` appends
every chunk it has not applied to the same file, at the same offset, under the worker's landing (and quarantine)
directory, so the reader (offsets, torn-tail and damage rules) and the compaction work on the cache unchanged.

What was applied is read off the cache itself: a chunk ``[start, end)`` of a file whose local copy already has
``end`` bytes is skipped without being downloaded (on a host that also runs a landing, its own files are always
ahead of what it shipped), one that overlaps the local end adds only its new bytes. Per writer, the listing
starts at the newest file the cache holds of it (its chunks are listed again, the older ones not at all), so a
run lists about one page per writer. A cache deleted between runs is rebuilt by listing every writer from the
start; the archive day files of compacted segments are downloaded when the cache lacks them.

A chunk that starts past the local end (a gap: a chunk missing from the store) stops that file there, with a
warning; nothing after a gap is appended, so offsets stay true.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from memberpulse.contracts.raw_chunks import (
    ARCHIVE_PREFIX,
    WRITERS_PREFIX,
    ChunkKind,
    ChunkRef,
    file_prefix,
    parse_chunk_key,
    split_file_name,
    writer_prefix,
)
from memberpulse.contracts.raw_record import ARCHIVE_GLOB, raw_archive_dir
from memberpulse.flows.fsio import fsync_path
from memberpulse.storage import ObjectInfo, ObjectStore

log = logging.getLogger("memberpulse.raw.remote")


@dataclass
class RawPull:
    """What one pull did: chunks and bytes appended, the files they went to, archive days downloaded."""

    chunks: int = 0
    bytes: int = 0
    writers: int = 0
    files: set[str] = field(default_factory=set)
    archives: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def pull_raw(store: ObjectStore, landing_dir: Path, quarantine_dir: Path | None = None) -> RawPull:
    """Bring the cache under ``landing_dir`` (and ``quarantine_dir``) up to what the store holds. Raises
    StorageUnavailable (exit 3) when the store does not answer: a run must not go on without the raw store."""
    pull = RawPull()
    writers = sorted(info.key.rsplit("/", 1)[-1] for info in store.list(WRITERS_PREFIX))
    pull.writers = len(writers)
    roots: list[tuple[ChunkKind, Path]] = [("landing", landing_dir)]
    if quarantine_dir is not None:
        roots.append(("quarantine", quarantine_dir))
    for kind, root in roots:
        newest = _newest_local_seqs(root)
        for writer in writers:
            _pull_writer(store, kind, root, writer, newest.get(writer), pull)
    _pull_archives(store, raw_archive_dir(landing_dir), pull)
    return pull


def _pull_writer(
    store: ObjectStore, kind: ChunkKind, root: Path, writer: str, newest: int | None, pull: RawPull
) -> None:
    after = None if newest is None else file_prefix(kind, writer, newest)  # sorts before that file's chunks
    stopped: set[str] = set()
    touched: dict[str, Path] = {}
    for info in store.list(writer_prefix(kind, writer), after=after):
        ref = parse_chunk_key(info.key)
        if ref is None or ref.archived or ref.relpath in stopped:
            continue
        target = root / ref.relpath
        have = _size(target)
        if ref.start + info.size <= have:
            continue  # applied already (or this host's own landing wrote it)
        if ref.start > have:
            stopped.add(ref.relpath)
            pull.warnings.append(_gap_warning(kind, ref, have))
            log.warning(pull.warnings[-1])
            continue
        added = _append(store, info, ref, target, have)
        touched[ref.relpath] = target
        pull.chunks += 1
        pull.bytes += added
    for relpath, target in touched.items():
        fsync_path(target)  # offsets committed later point into these bytes
        pull.files.add(f"{kind}:{relpath}")


def _append(store: ObjectStore, info: ObjectInfo, ref: ChunkRef, target: Path, have: int) -> int:
    """Append the chunk's bytes past ``have`` to ``target`` (created, with its directory, when missing)."""
    stored = store.get(info.key)
    if stored is None:  # deleted since the listing: its file was compacted by another worker
        return 0
    data = stored.data[have - ref.start :]
    if not target.parent.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        fsync_path(target.parent.parent)
    created = not target.exists()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    if created:
        fsync_path(target.parent)
    return len(data)


def _pull_archives(store: ObjectStore, archive_dir: Path, pull: RawPull) -> None:
    """Archive day files the cache lacks (or holds in another size: the store's is the newer compaction)."""
    for info in store.list(ARCHIVE_PREFIX):
        name = info.key.rsplit("/", 1)[-1]
        target = archive_dir / name
        if not Path(name).match(ARCHIVE_GLOB) or _size(target) == info.size:
            continue
        archive_dir.mkdir(parents=True, exist_ok=True)
        partial = archive_dir / f".tmp-pull-{name}"
        store.download(info.key, partial)
        fsync_path(partial)
        os.replace(partial, target)
        fsync_path(archive_dir)
        pull.archives.append(name)


def _newest_local_seqs(root: Path) -> dict[str, int]:
    """The highest file number the cache holds of each writer."""
    newest: dict[str, int] = {}
    for path in root.glob("**/*.ndjson") if root.is_dir() else []:
        parts = split_file_name(path.name)
        if parts is not None:
            newest[parts[0]] = max(parts[1], newest.get(parts[0], 0))
    return newest


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _gap_warning(kind: ChunkKind, ref: ChunkRef, have: int) -> str:
    return (
        f"the object store has {kind} bytes of {ref.relpath} from offset {ref.start}, but the ones from {have} are "
        "missing: that file is read up to the gap only (a chunk deleted by hand, or a store that lost it)"
    )
