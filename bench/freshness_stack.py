"""What the two freshness benches share: a migrated PostgreSQL database, processes started and stopped as one
group, webhooks posted as Whop would sign them, and a watcher noting when each member's row appears."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import httpx
import psycopg


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def migrated_database() -> Iterator[str]:
    """A DSN to a fresh database with supabase/migrations applied, on the test suite's own PostgreSQL."""
    from memberpulse.flows.publish import apply_migrations
    from tests.support.postgres import start_server

    server = start_server()
    try:
        dsn = server.dsn(server.create_database())
        apply_migrations(dsn)
        yield dsn
    finally:
        server.stop()


class Processes:
    """Long-running processes, each in its own session so that stopping one stops its children too; all of
    them write to one log (``root/processes.log``)."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self._procs: list[subprocess.Popen[bytes]] = []
        self._log: IO[bytes] = open(root / "processes.log", "wb")  # noqa: SIM115 - closed in stop_all

    def start(self, cmd: list[str], cwd: Path | None = None) -> None:
        self._procs.append(
            subprocess.Popen(
                cmd,
                cwd=cwd or self.root,
                env=self.env,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def stop_all(self) -> None:
        for proc in reversed(self._procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        self._log.close()


def post_went_valid(client: httpx.Client, url: str, membership_id: str, *, secret: str) -> bool:
    """One signed ``membership.went_valid`` for a new member; True when the landing answered 200."""
    from memberpulse.landing import mock_events as mock

    who = mock.MockMember(membership_id=membership_id, user_id=f"user_{membership_id}")
    body, headers = mock.signed_delivery(mock.went_valid(who, created_at=datetime.now(UTC)), secret=secret)
    return client.post(url, content=body, headers=headers).status_code == 200


class RowWatcher:
    """Polls ``member_activity`` for the acknowledged members and notes when each row first appears."""

    def __init__(self, dsn: str, poll_seconds: float = 0.1) -> None:
        self.dsn, self.poll_seconds = dsn, poll_seconds
        self.acked: dict[str, float] = {}
        self.visible: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> RowWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def wait_for(self, ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(m not in self.visible for m in ids) and time.monotonic() < deadline:
            time.sleep(0.5)

    def delays(self, ids: list[str]) -> list[float]:
        """Seconds from each 200 to its row, for those that arrived."""
        return [self.visible[m] - self.acked[m] for m in ids if m in self.visible and m in self.acked]

    def _watch(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as con:
            while not self._stop.is_set():
                pending = [m for m in list(self.acked) if m not in self.visible]
                if pending:
                    rows = con.execute(
                        "SELECT membership_id FROM member_activity WHERE membership_id = ANY(%s)", [pending]
                    ).fetchall()
                    now = time.time()
                    for (mid,) in rows:
                        self.visible.setdefault(mid, now)
                time.sleep(self.poll_seconds)
