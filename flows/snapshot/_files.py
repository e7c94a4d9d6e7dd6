"""The snapshot folder: file names, the writer lock, the atomic swap of ``latest.duckdb``, retention.

Analysts open ``latest.duckdb``; the writer never does. Each run builds a fresh file under a ``.tmp-`` name,
renames it to its timestamped name, then points ``latest.duckdb`` at it by renaming a new hard link over the
old name. A reader that already has the old file open keeps its inode (POSIX rename semantics) and is neither
disturbed nor able to block the writer; a reader opening the name sees one complete file or the other.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from memberpulse.contracts.times import FILE_TIME_PATTERN, file_time, require_aware
from memberpulse.errors import InvalidInput, StorageUnavailable
from memberpulse.flows.fsio import fsync_path

LATEST_NAME = "latest.duckdb"
TMP_PREFIX = ".tmp-"
LOCK_NAME = ".write.lock"
SNAPSHOT_NAME = re.compile(rf"^{FILE_TIME_PATTERN}-[0-9A-Za-z]{{1,8}}\.duckdb$")
LOCK_WAIT_SECONDS = 120.0


def snapshot_name(run_at: datetime, run_id: str) -> str:
    """``<run_at as YYYYMMDDTHHMMSSffffffZ>-<first 8 letters/digits of run_id>.duckdb``: sorts by time."""
    require_aware(run_at, "run_at")
    short_id = re.sub(r"[^0-9A-Za-z]", "", run_id)[:8]
    if not short_id:
        raise InvalidInput("run_id has no letters or digits to name the snapshot with", value=run_id)
    return f"{file_time(run_at)}-{short_id}.duckdb"


@contextlib.contextmanager
def writer_lock(snapshots_dir: Path) -> Iterator[None]:
    """One writer per folder. The kernel drops the lock when its holder dies: a crash never wedges it."""
    with open(snapshots_dir / LOCK_NAME, "a") as fh:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StorageUnavailable(
                        f"another process has been writing a snapshot in {snapshots_dir} for over "
                        f"{LOCK_WAIT_SECONDS:.0f} s",
                        hint="let that run finish; retry this one afterwards",
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_stray_tmp(snapshots_dir: Path) -> list[str]:
    """Delete what a killed writer left behind (``.tmp-*`` files, their ``.wal`` and spill folders).

    Safe only under :func:`writer_lock`: then no live writer owns a ``.tmp-`` name.
    """
    removed = []
    for path in snapshots_dir.iterdir():
        if not path.name.startswith(TMP_PREFIX):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


def tmp_path_for(final: Path) -> Path:
    return final.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{final.name}")


def discard(path: Path) -> None:
    """Remove a half-built DuckDB file and the side files DuckDB may keep next to it."""
    for side in (path, path.with_name(path.name + ".wal")):
        side.unlink(missing_ok=True)
    shutil.rmtree(path.with_name(path.name + ".tmp"), ignore_errors=True)


def publish(tmp: Path, final: Path) -> None:
    """Make the finished ``tmp`` durable under its final name, read-only (a snapshot never changes)."""
    fsync_path(tmp)
    os.chmod(tmp, 0o444)
    os.replace(tmp, final)
    fsync_path(final.parent)


def point_latest_at(final: Path) -> Path:
    """Swap ``latest.duckdb`` to ``final`` in one rename (of a hard link, or of a copy where links fail)."""
    latest = final.with_name(LATEST_NAME)
    staged = final.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{LATEST_NAME}")
    try:
        try:
            os.link(final, staged)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            shutil.copyfile(final, staged)
            fsync_path(staged)
            os.chmod(staged, 0o444)
        os.replace(staged, latest)
    finally:
        staged.unlink(missing_ok=True)
    fsync_path(final.parent)
    return latest


def apply_retention(snapshots_dir: Path, *, keep: int, protect: Path) -> list[str]:
    """Keep the newest ``keep`` timestamped snapshots; never delete ``protect`` nor what ``latest`` is."""
    names = sorted(p.name for p in snapshots_dir.iterdir() if SNAPSHOT_NAME.match(p.name))
    latest_id = _file_id(snapshots_dir / LATEST_NAME)
    removed = []
    for name in names[: max(len(names) - keep, 0)]:
        path = snapshots_dir / name
        if name == protect.name or (latest_id is not None and _file_id(path) == latest_id):
            continue
        path.unlink(missing_ok=True)
        removed.append(name)
    if removed:
        fsync_path(snapshots_dir)
    return removed


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
