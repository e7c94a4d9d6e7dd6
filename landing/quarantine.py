"""The capped rejection log: what was refused, why, and the first 4 KiB of the body — never more.

The entry format and the file names are :mod:`memberpulse.contracts.quarantine`.

The cap (``quarantine_max_bytes``) holds for the whole directory, all landing processes together: each write
counts and appends under an exclusive ``flock`` on ``quarantine/.lock``, which also holds the bytes the entry
files hold. A flood cannot blind the log: past the cap the oldest whole entry files (any process's) are removed
and the new refusal is written. Each process writes files of an eighth of the cap, so a rotation keeps about seven
eighths of the cap's worth of the newest entries. Whatever the flood, three things stay:

- **counts**: ``reason-counts.txt`` counts every refusal per reason for the directory, restarts included (a
  fixed-width count rewritten in place), and each entry carries its reason's count (``reason_count``);
- **the first refusal of each reason**, in ``first-of-each-reason.ndjson``, which rotation never removes, even
  with the cap reached (or 0);
- this process's per-reason counts (:attr:`Quarantine.refusals`), for ``/metrics``.

:data:`MAX_REASONS` reasons are counted one by one, any further ones together as "(other reasons)", and the
first-of-each-reason file stops at :data:`SAMPLES_MAX_BYTES`: the directory holds at most the cap plus
:data:`ALLOWANCE_BYTES`. Only a fixed allow-list of headers is kept (no signatures, no cookies, no
authorization). Writes are plain appends without fsync: this is diagnostics, not data.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, NamedTuple

from memberpulse.contracts.quarantine import (
    BODY_PREFIX_BYTES,
    FIRST_OF_EACH_REASON,
    REASON_COUNTS,
    encode_quarantine_entry,
    quarantine_path,
)

__all__ = ["ALLOWANCE_BYTES", "BODY_PREFIX_BYTES", "MAX_REASONS", "SAMPLES_MAX_BYTES", "Quarantine", "reason_key"]

#: Each process's entry files are closed at this fraction of the cap: what one rotation removes at most.
SEGMENTS_PER_CAP: Final = 8
#: Distinct reasons counted (and sampled) one by one; further ones share :data:`OTHER_REASONS`.
MAX_REASONS: Final = 64
OTHER_REASONS: Final = "(other reasons)"
#: Size bound of the first-of-each-reason file (an entry is at most about 25 KiB; a few KiB as a rule).
SAMPLES_MAX_BYTES: Final = 256 * 1024
_KEY_BYTES: Final = 200
_COUNT_DIGITS: Final = 16
#: What the directory may hold beyond the cap: the first-of-each-reason file and the counts file.
ALLOWANCE_BYTES: Final = SAMPLES_MAX_BYTES + (MAX_REASONS + 1) * (_COUNT_DIGITS + 1 + _KEY_BYTES + 1)


def reason_key(status: int, reason: str) -> str:
    """What refusals are counted by: ``"403 no matching signature found"`` (one line, at most 200 bytes)."""
    key = f"{status} {reason}".replace("\n", " ").replace("\r", " ")
    return key.encode()[:_KEY_BYTES].decode("utf-8", "ignore")


def _bounded(key: str, known: Mapping[str, object]) -> str:
    """``key``, or :data:`OTHER_REASONS` once :data:`MAX_REASONS` others are known (the counts stay small)."""
    if key in known or len(known) - (OTHER_REASONS in known) < MAX_REASONS:
        return key
    return OTHER_REASONS


class _Listed(NamedTuple):
    size: int
    mtime_ns: int


def _entry_files(directory: Path) -> dict[str, _Listed]:
    """The files rotation may remove (every entry file but the first-of-each-reason one), by name."""
    files = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith(".ndjson") and entry.name != FIRST_OF_EACH_REASON and entry.is_file():
                with contextlib.suppress(FileNotFoundError):
                    stat = entry.stat()
                    files[entry.name] = _Listed(stat.st_size, stat.st_mtime_ns)
    return files


def _removed(fd: int | None) -> bool:
    """Whether the file open as ``fd`` lost its name (another process's rotation, or by hand)."""
    return fd is not None and os.fstat(fd).st_nlink == 0


def _open(path: Path, flags: int) -> int:
    return os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, 0o644)


class _Fd:
    """A file of the quarantine, opened on first use, and anew once it lost its name (see ``forget_if_removed``)."""

    def __init__(self, path: Path, flags: int) -> None:
        self.path = path
        self._flags = flags
        self.fd: int | None = None

    def get(self) -> int:
        if self.fd is None:
            self.fd = _open(self.path, self._flags)
        return self.fd

    def forget_if_removed(self) -> bool:
        """Close the file if it was removed (rotated out, or by hand), so that the next use creates it anew."""
        if not _removed(self.fd):
            return False
        self.close()
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _ReasonCounts:
    """The directory's refusals per reason in ``reason-counts.txt``: one line per reason, ``<count> <key>``, its
    16 digits rewritten in place (a count never moves, so offsets are cached). Used only under the lock."""

    def __init__(self, path: Path) -> None:
        self.file = _Fd(path, os.O_RDWR)
        self._offsets: dict[str, int] = {}  # reason key -> offset of its count
        self._size = 0
        self._torn = False  # the last line lacks its newline (a write cut short)

    def increment(self, key: str) -> int:
        """Count one refusal with ``key``; its count so far, this one included."""
        if self.file.fd is None or self.file.forget_if_removed():  # removed by hand: counting starts anew
            self._offsets.clear()
        fd = self.file.get()
        offset = self._offsets.get(key)
        if offset is None and _bounded(key, self._offsets) == key:  # no new reason fits once the file is full
            self._load(fd)  # another process may have added it
            offset = self._offsets.get(key)
        if offset is None:
            key = _bounded(key, self._offsets)
            offset = self._offsets.get(key)
            if offset is None:
                offset = self._add(fd, key)
        digits = os.pread(fd, _COUNT_DIGITS, offset)
        count = (int(digits) if digits.isdigit() else 0) + 1
        os.pwrite(fd, b"%0*d" % (_COUNT_DIGITS, count), offset)
        return count

    def _load(self, fd: int) -> None:
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        *lines, rest = data.split(b"\n")
        self._offsets.clear()
        offset = 0
        for line in lines:
            if len(line) > _COUNT_DIGITS + 1 and line[_COUNT_DIGITS : _COUNT_DIGITS + 1] == b" ":
                self._offsets[line[_COUNT_DIGITS + 1 :].decode("utf-8", "replace")] = offset
            offset += len(line) + 1
        self._size, self._torn = len(data), bool(rest)

    def _add(self, fd: int, key: str) -> int:
        start = self._size + self._torn  # after a newline that ends a torn line
        line = b"%s %s\n" % (b"0" * _COUNT_DIGITS, key.encode())
        os.pwrite(fd, b"\n" * self._torn + line, self._size)
        self._offsets[key] = start
        self._size, self._torn = start + len(line), False
        return start


class _Segments:
    """This process's entry files, written one at a time, rotated with every process's to stay under the cap.

    Listing the directory for every refusal would cost more than the rest of a refusal, so the lock file holds
    the bytes all entry files hold, as 16 digits: raised before each append and lowered after each removal, so a
    crash in between leaves it too high, never too low (the cap still holds; the next rotation lists the
    directory and sets it right). A process lists the directory at its first write too (files of an earlier
    release, or removed by hand)."""

    def __init__(self, directory: Path, writer: str, max_bytes: int) -> None:
        self.directory = directory
        self.writer = writer
        self.max_bytes = max_bytes
        self.file_bytes = max(1, max_bytes // SEGMENTS_PER_CAP)
        self._seq = 0
        self._file: _Fd | None = None
        self._size = 0  # bytes in this process's current file
        self._listed = False  # the stored total was set from a listing by this process

    def append(self, line: bytes, lock_fd: int) -> bool:
        if len(line) > self.max_bytes:
            return False  # could never fit: only counted (and kept if it is the first of its reason)
        if self._file is not None and (self._size + len(line) > self.file_bytes or self._file.forget_if_removed()):
            self._close()  # full, or removed by another process's rotation: the next file
        total = _stored_total(lock_fd) if self._listed else None
        if total is None or total + len(line) > self.max_bytes:
            total = self._rotate(len(line))
        if self._file is None:
            self._seq += 1
            self._file, self._size = _Fd(quarantine_path(self.directory, self.writer, self._seq), _APPEND), 0
        _store_total(lock_fd, total + len(line))  # first: a crash before the write leaves it too high
        os.write(self._file.get(), line)
        self._size += len(line)
        return True

    def _rotate(self, incoming: int) -> int:
        """Remove the oldest whole files (by last write) until ``incoming`` more bytes fit under the cap; the bytes
        left. A reader holding an offset into a removed file finds it gone; no file is ever rewritten."""
        files = _entry_files(self.directory)
        total = sum(listed.size for listed in files.values())
        for name, listed in sorted(files.items(), key=lambda item: (item[1].mtime_ns, item[0])):
            if total + incoming <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / name)
            total -= listed.size
            if self._file is not None and name == self._file.path.name:
                self._close()
        self._listed = True
        return total

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        self._close()


_APPEND: Final = os.O_WRONLY | os.O_APPEND


def _stored_total(lock_fd: int) -> int | None:
    digits = os.pread(lock_fd, _COUNT_DIGITS, 0)
    return int(digits) if len(digits) == _COUNT_DIGITS and digits.isdigit() else None


def _store_total(lock_fd: int, total: int) -> None:
    os.pwrite(lock_fd, b"%0*d" % (_COUNT_DIGITS, total), 0)


class Quarantine:
    def __init__(self, directory: Path, *, max_bytes: int, writer: str) -> None:
        self.directory = directory
        self._segments = _Segments(directory, writer, max_bytes)
        self._samples = _Fd(directory / FIRST_OF_EACH_REASON, _APPEND)
        self._counts = _ReasonCounts(directory / REASON_COUNTS)
        self._lock_fd: int | None = None
        #: This process's refusals per :func:`reason_key`, counted whatever became of the entry (``/metrics``).
        self.refusals: dict[str, int] = {}
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
        """Count one rejection and log it; True if its entry was written. Never raises (a full disk must not turn
        a 403 into a 500)."""
        key = reason_key(status, reason)
        counted = _bounded(key, self.refusals)
        self.refusals[counted] = self.refusals.get(counted, 0) + 1
        received_at = now or datetime.now(UTC)

        def entry(reason_count: int) -> bytes:
            return encode_quarantine_entry(
                received_at=received_at, status=status, reason=reason, remote=remote, headers=headers,
                body_bytes=body_bytes, body_prefix=body_prefix, reason_count=reason_count,
            )  # fmt: skip

        try:
            kept = self._write(key, entry)
        except OSError:
            kept = False
        if kept:
            self.kept += 1
        else:
            self.dropped += 1
        return kept

    def _write(self, key: str, entry: Callable[[int], bytes]) -> bool:
        with self._locked() as lock_fd:
            count = self._counts.increment(key)
            line = entry(count)
            if count == 1 and self._sample(line):
                return True
            return self._segments.append(line, lock_fd)

    def _sample(self, line: bytes) -> bool:
        """Append the first refusal of a reason to its file, unless that is full (measured only now: rare)."""
        self._samples.forget_if_removed()
        fd = self._samples.get()
        if os.fstat(fd).st_size + len(line) > SAMPLES_MAX_BYTES:
            return False
        os.write(fd, line)
        return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """The directory lock: held for one count, one append and, now and then, a rotation."""
        if self._lock_fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _open(self.directory / ".lock", os.O_RDWR)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield self._lock_fd
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        for file in (self._segments, self._samples, self._counts.file):
            file.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
