"""Crash-safe file writes: write a temporary sibling, fsync it, rename over the target, fsync the directory.

A reader (or the next run after a crash) sees either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from memberpulse.errors import ConfigError, CorruptState, StorageUnavailable


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes the names in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_FULL = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full, whoever raised it: an OSError, or a library
    (polars, DuckDB) that reports the operating system's error in its message."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return True
    return any(text in str(exc) for text in _FULL_TEXT)


def storage_full(path: Path) -> StorageUnavailable:
    """A full disk while writing ``path``: transient (exit 3): nothing was committed, so once there is space the
    next run does the same work again."""
    return StorageUnavailable(
        f"no space left to write {path}", hint="free disk space under the data dir, then run again"
    )


@contextlib.contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """Yields a temporary sibling to write; on success it is fsync'd and renamed over ``path``. A full disk is
    :class:`StorageUnavailable` naming the file (one mechanism for every durable write), not a traceback."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
        try:
            yield tmp
            fsync_path(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_path(path.parent)
    except Exception as exc:
        if disk_full(exc):
            raise storage_full(path) from exc
        raise


@contextlib.contextmanager
def atomic_output(out: Path) -> Iterator[Path]:
    """:func:`atomic_target` for a file a person named (``--out``): its folder must exist (a typo makes no
    directories), and a file that cannot be written is a ConfigError naming it (exit 2), never a traceback nor
    a claim that it was written."""
    if not out.parent.is_dir():
        raise ConfigError(
            f"cannot write {out}: {out.parent} is not a directory", hint="give a file in an existing folder"
        )
    try:
        with atomic_target(out) as tmp:
            yield tmp
    except StorageUnavailable:
        raise
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc}", hint="give a file you may write") from None


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


def file_sha256(path: Path) -> str:
    """The sha256 of the file's bytes, read in 1 MiB blocks (the state tree names each object by it)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
