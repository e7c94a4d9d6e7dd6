"""Crash-safe file writes: write a temporary sibling, fsync it, rename over the target, fsync the directory.

A reader (or the next run after a crash) sees either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from memberpulse.errors import CorruptState


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes the names in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """Yields a temporary sibling to write; on success it is fsync'd and renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_parquet(frame: pl.DataFrame, path: Path) -> None:
    with atomic_target(path) as tmp:
        frame.write_parquet(tmp, compression="zstd", statistics=True)


def read_parquet_checked(path: Path, *, what: str, hint: str) -> pl.DataFrame:
    """Read a parquet file memberpulse wrote itself; a missing, truncated or foreign file is CorruptState
    naming it (with ``hint``: how to rebuild it), not a reader's traceback."""
    try:
        return pl.read_parquet(path, glob=False)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise CorruptState(
            f"{what} {path} is damaged or missing: {_first_line(exc)}", path=str(path), hint=hint
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def link_atomically(existing: Path, path: Path) -> None:
    """Make ``path`` another name for ``existing`` (no data copied), replacing ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        try:
            os.link(existing, tmp)
        except OSError:  # a filesystem without hard links: a copy is the same file, only bigger
            shutil.copyfile(existing, tmp)
            fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)


def file_version(path: Path) -> str | None:
    """Changes whenever the file is replaced (an atomic write makes a new inode); None when it is absent."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"
