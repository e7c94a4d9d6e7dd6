"""A publish target that holds a lock, never answers, or is misconfigured ends the run promptly with the right
exit code (3 transient, 2 configuration), instead of holding it (and the reconcile lock) indefinitely."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from memberpulse.cli import main
from tests.support.reconcile_testkit import append_raw, scenario

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("MEMBERPULSE_DATA_DIR", str(tmp_path))
    append_raw(tmp_path, scenario())
    return tmp_path


class SilentServer:
    """Accepts TCP connections and never sends a byte (a database host that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.mark.timeout(300)
def test_a_held_lock_on_member_activity_fails_the_run_with_exit_3_within_the_lock_timeout(
    data_dir: Path, migrated_postgres_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SUPABASE_DB_URL", migrated_postgres_dsn)
    monkeypatch.setenv("MEMBERPULSE_PUBLISH_LOCK_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("MEMBERPULSE_PUBLISH_BACKOFF_SECONDS", "0")
    with psycopg.connect(migrated_postgres_dsn) as holder:
        holder.execute("LOCK TABLE public.member_activity IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        code = main(["run"])
        elapsed = time.monotonic() - started
        holder.rollback()
    assert code == 3
    assert elapsed < 30  # 4 attempts × 1 s lock timeout, plus the run itself
    assert "lock timeout" in capsys.readouterr().err
    assert main(["run"]) == 0  # the lock gone, the next run publishes


@pytest.mark.timeout(300)
def test_a_target_that_never_answers_fails_the_run_with_exit_3_within_two_minutes_by_default(
    data_dir: Path, silent_server: SilentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPABASE_DB_URL", f"postgresql://user:secret@127.0.0.1:{silent_server.port}/postgres")
    started = time.monotonic()
    code = main(["run"])
    elapsed = time.monotonic() - started
    assert code == 3
    assert elapsed < 120
    # One retry layer: MEMBERPULSE_PUBLISH_MAX_ATTEMPTS (4) publish attempts; the failed run is recorded
    # locally only (the target just proved it is down), so nothing more waits on it.
    assert len(silent_server.accepted) == 4


def test_an_unusable_connection_parameter_is_a_configuration_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SUPABASE_DB_URL", "postgresql://user:secret@127.0.0.1:5432/postgres?sslmode=bogus")
    started = time.monotonic()
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - started < 30
    assert "SUPABASE_DB_URL" in err and "sslmode" in err and "secret" not in err
