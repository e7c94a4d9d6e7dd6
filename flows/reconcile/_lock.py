"""One reconcile at a time per data dir, even outside Prefect's concurrency limit."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from memberpulse.errors import RunInProgress


@contextmanager
def run_lock(warehouse_dir: Path, *, create: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``warehouse_dir/.reconcile.lock``; a second run fails at once (transient: exit 3).

    ``create=False`` (a dry run, which must change no file): where no lock file exists yet there is no state
    to protect, and the run goes ahead without one.
    """
    path = warehouse_dir / ".reconcile.lock"
    if not create and not path.exists():
        yield
        return
    warehouse_dir.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInProgress(
                f"another reconcile run holds the lock on {warehouse_dir}",
                hint="runs never overlap; this one can run again once that one has finished",
            ) from None
        yield
