"""The capped rejection log: what was refused, why, and the first 4 KiB of the body — never more.

The entry format is :mod:`memberpulse.contracts.quarantine`.

One NDJSON file per process under ``quarantine/``. The total size of the directory is capped
(``quarantine_max_bytes``) for all processes together: each write measures the directory and appends under an
exclusive ``flock`` on ``quarantine/.lock``, so several landing processes cannot each fill it to the cap. Past
the cap a rejection is only counted (and the directory is measured again at most once a second), so nobody
can fill the disk by sending garbage. Only a fixed allow-list of headers is kept (no signatures, no cookies,
no authorization). Writes are plain appends without fsync: this is diagnostics, not data.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from memberpulse.contracts.quarantine import BODY_PREFIX_BYTES, encode_quarantine_entry, quarantine_path

__all__ = ["BODY_PREFIX_BYTES", "Quarantine"]


class Quarantine:
    def __init__(self, directory: Path, *, max_bytes: int, writer: str) -> None:
        self.directory = directory
        self.path = quarantine_path(directory, writer)
        self._max_bytes = max_bytes
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._full_until = 0.0  # monotonic time before which the directory is known to be full
        self.kept = 0
        self.dropped = 0

    def record(
        self,
        *,
        status: int,
        reason: str,
        headers: Mapping[str, str],
        body_prefix: bytes,
        body_bytes: int,
        remote: str | None,
        now: datetime | None = None,
    ) -> bool:
        """Log one rejection if it fits under the cap; True if kept. Never raises (a full disk must not turn a
        403 into a 500)."""
        line = encode_quarantine_entry(
            received_at=now or datetime.now(UTC),
            status=status,
            reason=reason,
            remote=remote,
            headers=headers,
            body_bytes=body_bytes,
            body_prefix=body_prefix,
        )
        if time.monotonic() < self._full_until or not self._append_under_cap(line):
            self.dropped += 1
            return False
        self.kept += 1
        return True

    def _append_under_cap(self, line: bytes) -> bool:
        try:
            if self._lock_fd is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._lock_fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # held for one stat of a few files and one append
            try:
                if _directory_size(self.directory) + len(line) > self._max_bytes:
                    self._full_until = time.monotonic() + 1.0
                    return False
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
                os.write(self._fd, line)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        except OSError:
            return False
        return True

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None


def _directory_size(directory: Path) -> int:
    if not directory.is_dir():
        return 0
    return sum(entry.stat().st_size for entry in directory.iterdir() if entry.is_file())
