"""The state tree: every state file of the data dir in the object store, committed at one point.

Each file a run writes under ``warehouse/`` and ``snapshots/`` is uploaded as an immutable object named by the
sha256 of its bytes (``state/objects/<sha256>``: equal files, such as a quiet run's history hard link, are one
object). ``state/tree.json`` maps each path to its object, size and sha256; it is the single commit point,
written create-only (the first commit) or replacing exactly the version the run started from. A run that loses
that race committed nothing (its objects are unreferenced, and collected later), unless every path it changed
is one the winner did not touch (a backfill's new folder beside a reconcile run's commit): then its changes
are applied on top of the winner's tree, and committed the same way.

The local data dir is a cache of the tree: :func:`fetch_tree` makes the tracked files equal to it, fetching
only those whose checksum differs, and records what it holds in ``<data_dir>/.state-cache.json`` (a file whose
size and mtime still match is not read again).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from memberpulse.errors import RunInProgress
from memberpulse.flows.fsio import atomic_target, file_sha256, link_atomically
from memberpulse.flows.state_codec import (
    STATE_CACHE,
    STATE_TREE,
    CachedFile,
    StateCache,
    StateTree,
    TreeEntry,
    decode_document,
    encode_document,
    read_document,
    write_document,
)
from memberpulse.storage import ObjectStore

TREE_KEY: Final = "state/tree.json"
OBJECTS_PREFIX: Final = "state/objects"
CACHE_RECORD: Final = ".state-cache.json"
TRACKED_DIRS: Final = ("warehouse", "snapshots")
#: Never in the tree: the run locks, and what only this host reads (a backdated run's snapshots).
LOCAL_ONLY_NAMES: Final = frozenset({".reconcile.lock", ".write.lock"})
LATEST_SNAPSHOT: Final = "snapshots/latest.duckdb"


@dataclass(frozen=True)
class RemoteTree:
    """The tree as read, and the version a commit must replace (None: no tree yet)."""

    tree: StateTree
    version: str | None


def read_tree(store: ObjectStore) -> RemoteTree:
    found = store.get(TREE_KEY)
    if found is None:
        return RemoteTree(StateTree(), None)
    return RemoteTree(decode_document(found.data, STATE_TREE, path=Path(TREE_KEY)), found.version)


def local_files(data_dir: Path) -> dict[str, Path]:
    """The tracked files of the cache, by path under the data dir: every file under ``warehouse/`` and
    ``snapshots/`` except locks, temporaries, ``snapshots/as-of/`` and the older snapshot files (the tree
    holds ``latest.duckdb`` and the file it is a link to)."""
    latest = data_dir / LATEST_SNAPSHOT
    latest_id = _file_id(latest)
    found: dict[str, Path] = {}
    for top in TRACKED_DIRS:
        for dirpath, dirnames, filenames in os.walk(data_dir / top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".tmp-") and d != "as-of"]
            for name in filenames:
                path = Path(dirpath) / name
                if name in LOCAL_ONLY_NAMES or name.startswith(".tmp-"):
                    continue
                if path.parent == latest.parent and name.endswith(".duckdb") and _file_id(path) != latest_id:
                    continue
                found[path.relative_to(data_dir).as_posix()] = path
    return found


def checksums(data_dir: Path, files: Mapping[str, Path], cache: StateCache) -> dict[str, CachedFile]:
    """Each file's sha256, taken from the cache record while its size and mtime are unchanged."""
    result = {}
    for rel, path in files.items():
        st = path.stat()
        known = cache.files.get(rel)
        if known is not None and known.size == st.st_size and known.mtime_ns == st.st_mtime_ns:
            result[rel] = known
        else:
            result[rel] = CachedFile(sha256=file_sha256(path), size=st.st_size, mtime_ns=st.st_mtime_ns)
    return result


def read_cache(data_dir: Path) -> StateCache:
    return read_document(data_dir / CACHE_RECORD, STATE_CACHE) or StateCache()


@dataclass
class FetchResult:
    fetched: int = 0
    fetched_bytes: int = 0
    removed: int = 0
    kept: int = 0


def fetch_tree(store: ObjectStore, data_dir: Path, remote: RemoteTree) -> FetchResult:
    """Make the cache's tracked files equal to ``remote``: fetch what differs, remove what the tree lacks."""
    result = FetchResult()
    files = local_files(data_dir)
    held = checksums(data_dir, files, read_cache(data_dir))
    placed: dict[str, Path] = {}  # sha256 -> a cache file that holds it now
    for rel, entry in sorted(remote.tree.files.items()):
        path = data_dir / rel
        if rel in held and held[rel].sha256 == entry.sha256:
            result.kept += 1
        elif entry.sha256 in placed:
            link_atomically(placed[entry.sha256], path)  # latest.duckdb and its file are one inode, as written
        else:
            with atomic_target(path) as tmp:
                store.download(entry.key, tmp)
            result.fetched, result.fetched_bytes = result.fetched + 1, result.fetched_bytes + entry.size
        placed.setdefault(entry.sha256, path)
    for rel, path in files.items():
        if rel not in remote.tree.files:
            path.unlink(missing_ok=True)
            result.removed += 1
    synced = {rel: path for rel, path in local_files(data_dir).items() if rel in remote.tree.files}
    _record(data_dir, remote.version, checksums(data_dir, synced, StateCache()))
    return result


@dataclass
class CommitResult:
    version: str | None  # None: nothing changed, no commit
    tree: StateTree | None = None  # what was committed
    uploaded: int = 0
    uploaded_bytes: int = 0
    merged: bool = False  # applied on top of a commit made meanwhile, the paths being disjoint


def commit_tree(
    store: ObjectStore, data_dir: Path, base: RemoteTree, *, run_id: str, command: str, holder: str
) -> CommitResult:
    """Upload the cache's new files and commit the tree against ``base``; RunInProgress (exit 3) when another
    run committed meanwhile and touched a path this one changed: this run then committed nothing."""
    files = local_files(data_dir)
    sums = checksums(data_dir, files, read_cache(data_dir))
    entries = {
        rel: TreeEntry(key=f"{OBJECTS_PREFIX}/{s.sha256}", size=s.size, sha256=s.sha256) for rel, s in sums.items()
    }
    if entries == base.tree.files:
        _record(data_dir, base.version, sums)
        return CommitResult(version=None)
    result = CommitResult(version=None)
    known = {e.sha256 for e in base.tree.files.values()}
    for rel, entry in entries.items():
        if entry.sha256 not in known:
            known.add(entry.sha256)
            store.put(entry.key, files[rel])
            result.uploaded, result.uploaded_bytes = result.uploaded + 1, result.uploaded_bytes + entry.size
    tree = StateTree(
        files=entries, run_id=run_id, command=command, holder=holder,
        committed_at=datetime.now(UTC).isoformat(), parent=base.version,
    )  # fmt: skip
    version = _conditional_put(store, tree, base.version)
    if version is None:
        tree, version = _merge_on_conflict(store, base, tree)
        result.merged = True
    _record(data_dir, version, sums if not result.merged else _refetch_needed(sums, tree))
    result.version, result.tree = version, tree
    return result


def _conditional_put(store: ObjectStore, tree: StateTree, base_version: str | None) -> str | None:
    data = encode_document(STATE_TREE, tree)
    return store.put_new(TREE_KEY, data) if base_version is None else store.replace(TREE_KEY, data, base_version)


def _merge_on_conflict(store: ObjectStore, base: RemoteTree, mine: StateTree) -> tuple[StateTree, str]:
    """Another run committed first. Disjoint changes are applied on top of its tree (one more try per commit
    that comes in between, up to 3); overlapping ones mean this run committed nothing."""
    ours = _changed_paths(base.tree.files, mine.files)
    for _ in range(3):
        winner = read_tree(store)
        theirs = _changed_paths(base.tree.files, winner.tree.files)
        overlap = ours & theirs
        if overlap:
            raise RunInProgress(
                f"another run ({winner.tree.command} by {winner.tree.holder}) committed the shared state first and "
                f"changed what this one did ({sorted(overlap)[0]}…): this run committed nothing",
                hint="run again: it starts from that commit",
            )
        files = dict(winner.tree.files)
        for rel in ours:
            if rel in mine.files:
                files[rel] = mine.files[rel]
            else:
                files.pop(rel, None)
        merged = StateTree(
            files=files, run_id=mine.run_id, command=mine.command, holder=mine.holder,
            committed_at=mine.committed_at, parent=winner.version,
        )  # fmt: skip
        version = _conditional_put(store, merged, winner.version)
        if version is not None:
            return merged, version
        base = winner
    raise RunInProgress("the shared state kept changing while this run committed: it committed nothing")


def _changed_paths(before: Mapping[str, TreeEntry], after: Mapping[str, TreeEntry]) -> set[str]:
    return {rel for rel in before.keys() | after.keys() if before.get(rel) != after.get(rel)}


def _refetch_needed(sums: dict[str, CachedFile], tree: StateTree) -> dict[str, CachedFile]:
    """After a merge the cache lacks the winner's files: record only what it holds as the tree has it, so the
    next fetch brings the rest."""
    return {rel: s for rel, s in sums.items() if rel in tree.files and tree.files[rel].sha256 == s.sha256}


def _record(data_dir: Path, version: str | None, files: dict[str, CachedFile]) -> None:
    write_document(data_dir / CACHE_RECORD, STATE_CACHE, StateCache(tree_version=version, files=files))


def collect_garbage(store: ObjectStore, tree: StateTree, *, grace: timedelta) -> int:
    """Delete the objects no tree references that are older than ``grace`` (a run that started from an older
    tree fetched its objects within that time). Returns how many were deleted."""
    referenced = {entry.key for entry in tree.files.values()}
    cutoff = datetime.now(UTC) - grace
    deleted = 0
    for info in store.list(OBJECTS_PREFIX):
        if info.key not in referenced and info.last_modified < cutoff:
            store.delete(info.key)
            deleted += 1
    return deleted


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
