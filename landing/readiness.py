"""Can the landing store what it acknowledges? The start-up probe and the storage part of the health answer.

- :func:`probe_writable` runs before ``serve`` binds its port: create, write, fsync and remove a file in the
  landing directory, or stop with a :class:`~memberpulse.errors.ConfigError` (exit 2) naming the path.
- :class:`StorageHealth` remembers whether the last raw-store write failed and measures free space on the data
  volume, so ``GET /api/webhooks/whop`` answers 503 ``degraded`` whenever webhooks would get (or are about to
  get) 503s — load balancers and uptime checks see what Whop sees. The floor only changes the health answer:
  webhooks are still stored while the disk takes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from memberpulse.errors import ConfigError
from memberpulse.landing.endpoint import health_body


def probe_writable(directory: Path) -> None:
    """Prove ``directory`` (created when missing) takes a durable write; ``ConfigError`` naming it if not."""
    probe = directory / f".write-probe-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"memberpulse write probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"cannot store webhooks under {directory}: {exc.strerror or type(exc).__name__}",
            variable="MEMBERPULSE_DATA_DIR",
            hint=f"point MEMBERPULSE_DATA_DIR at a directory user {_user()} can create and write "
            f"(on the data volume), or fix the ownership and permissions of {directory}",
        ) from exc


def free_bytes_at(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the volume holding ``path`` (or its nearest parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    stats = os.statvfs(probe)
    return stats.f_bavail * stats.f_frsize


class StorageHealth:
    """The last raw-store write's outcome plus the free-space floor; ``problem()`` is None when all is well."""

    def __init__(
        self, data_dir: Path, *, min_free_bytes: int, free_bytes: Callable[[Path], int] = free_bytes_at
    ) -> None:
        self.data_dir = data_dir
        self.min_free_bytes = min_free_bytes
        self._measure = free_bytes
        self._write_failure: str | None = None

    def write_succeeded(self) -> None:
        self._write_failure = None

    def write_failed(self, reason: str) -> None:
        self._write_failure = reason

    def free_bytes(self) -> int | None:
        """Free bytes on the data volume, or None when it cannot be measured."""
        try:
            return self._measure(self.data_dir)
        except OSError:
            return None

    def problem(self) -> str | None:
        if self._write_failure is not None:
            return f"last write failed: {self._write_failure}"
        free = self.free_bytes()
        if free is None:
            return f"cannot measure free space under {self.data_dir}"
        if free < self.min_free_bytes:
            return (
                f"free space {_size(free)} under {self.data_dir} is below "
                f"MEMBERPULSE_MIN_FREE_BYTES ({_size(self.min_free_bytes)})"
            )
        return None

    def answer(self) -> tuple[int, dict[str, object]]:
        """``GET /api/webhooks/whop``: 200 with ``storage: ok``, or 503 ``degraded`` with the reason."""
        body = health_body()
        problem = self.problem()
        if problem is None:
            body["storage"] = "ok"
            return 200, body
        body["status"] = "degraded"
        body["storage"] = problem
        return 503, body


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())
