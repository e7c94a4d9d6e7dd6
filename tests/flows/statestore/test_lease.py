"""Runs never overlap across hosts, and never both commit: two worker processes against moto's S3 server (the
named S3 stand-in), each with its own data dir, sharing nothing but the store. Held deterministically at named
checkpoints (``memberpulse.testing.kill_points``), never by timing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memberpulse.flows.state_codec import STATE_LEASE, StateLease, decode_document
from memberpulse.flows.statestore import LEASE_KEY, read_tree
from memberpulse.storage import ObjectStore, StorageUrl
from memberpulse.testing.kill_points import FAULT_ENV, PAUSE_ENV, PAUSE_FILE_ENV
from tests.support.reconcile_testkit import AS_OF, append_raw, scenario

pytestmark = pytest.mark.slow
WAIT_SECONDS = 120.0


def _worker_env(data_dir: Path, storage_env: dict[str, str], **extra: str) -> dict[str, str]:
    append_raw(data_dir, scenario())
    return {**os.environ, **storage_env, "MEMBERPULSE_DATA_DIR": str(data_dir), **extra}


@contextlib.contextmanager
def _worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    argv = [sys.executable, "-m", "memberpulse.testing.kill_points", "run", "--as-of", AS_OF.isoformat()]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _until(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"waited {WAIT_SECONDS:.0f} s for {what}"
        time.sleep(0.05)


def _store(storage_env: dict[str, str]) -> ObjectStore:
    return ObjectStore.open(StorageUrl.parse(storage_env["MEMBERPULSE_STORAGE_URL"]))


def _lease(store: ObjectStore) -> StateLease:
    found = store.get(LEASE_KEY)
    assert found is not None
    return decode_document(found.data, STATE_LEASE, path=Path(LEASE_KEY))


def _wait_for_expiry(store: ObjectStore) -> None:
    expires = datetime.fromisoformat(_lease(store).expires_at)
    _until(lambda: datetime.now(UTC) > expires, "the lease to expire")


def test_two_workers_started_at_once_one_commits_the_other_exits_3(tmp_path: Path, storage_env: dict[str, str]) -> None:
    gate = tmp_path / "gate"
    paused = {PAUSE_ENV: "lease_taken", PAUSE_FILE_ENV: str(gate)}
    env_a = _worker_env(tmp_path / "host-a", storage_env, **paused)
    env_b = _worker_env(tmp_path / "host-b", storage_env, **paused)
    with _worker(env_a, tmp_path / "a.log") as a, _worker(env_b, tmp_path / "b.log") as b:
        # Whichever took the lease waits at the gate holding it; the other is refused and exits.
        _until(lambda: gate.with_name("gate.reached").exists() and (a.poll() is not None or b.poll() is not None),
               "one worker to hold the lease and the other to exit")  # fmt: skip
        loser, loser_log, winner = (a, "a.log", b) if a.poll() is not None else (b, "b.log", a)
        refused = (tmp_path / loser_log).read_text()
        assert loser.returncode == 3, refused
        assert "holds the shared state's lease" in refused and "until" in refused
        gate.touch()
        assert winner.wait(timeout=WAIT_SECONDS) == 0

    remote = read_tree(_store(storage_env))
    assert remote.version is not None and remote.tree.parent is None  # exactly one commit
    assert remote.tree.holder is not None and f":{winner.pid}:" in remote.tree.holder


def test_a_killed_holders_lease_expires_and_the_next_run_proceeds(tmp_path: Path, storage_env: dict[str, str]) -> None:
    short = {"MEMBERPULSE_STORAGE_LEASE_SECONDS": "2"}
    env_a = _worker_env(tmp_path / "host-a", storage_env, **short, **{FAULT_ENV: "state_before_commit"})
    with _worker(env_a, tmp_path / "a.log") as a:
        assert a.wait(timeout=WAIT_SECONDS) == -signal.SIGKILL, (tmp_path / "a.log").read_text()[-2000:]
    store = _store(storage_env)
    assert read_tree(store).version is None  # killed before its commit: nothing committed
    dead = _lease(store)
    assert not dead.released and f":{a.pid}:" in dead.holder

    _wait_for_expiry(store)
    env_b = _worker_env(tmp_path / "host-b", storage_env, **short)
    with _worker(env_b, tmp_path / "b.log") as b:
        assert b.wait(timeout=WAIT_SECONDS) == 0, (tmp_path / "b.log").read_text()[-2000:]
    remote = read_tree(store)
    assert remote.tree.holder is not None and f":{b.pid}:" in remote.tree.holder
    assert _lease(store).released


def test_a_lease_taken_from_a_stalled_holder_never_gives_two_commits(
    tmp_path: Path, storage_env: dict[str, str]
) -> None:
    """A holder frozen past its lease (a GC pause, a suspended VM, a clock running ahead elsewhere) loses the
    lease to another worker; when it wakes, its commit is refused by the tree's fence: one commit, exit 3."""
    gate, short = tmp_path / "gate", {"MEMBERPULSE_STORAGE_LEASE_SECONDS": "2"}
    paused = {PAUSE_ENV: "state_before_commit", PAUSE_FILE_ENV: str(gate), **short}
    env_a = _worker_env(tmp_path / "host-a", storage_env, **paused)
    store = _store(storage_env)
    with _worker(env_a, tmp_path / "a.log") as a:
        _until(gate.with_name("gate.reached").exists, "the first worker to finish its work")
        os.kill(a.pid, signal.SIGSTOP)  # frozen: its lease is no longer renewed
        _wait_for_expiry(store)
        env_b = _worker_env(tmp_path / "host-b", storage_env, **short)
        with _worker(env_b, tmp_path / "b.log") as b:
            assert b.wait(timeout=WAIT_SECONDS) == 0, (tmp_path / "b.log").read_text()[-2000:]
        gate.touch()
        os.kill(a.pid, signal.SIGCONT)
        assert a.wait(timeout=WAIT_SECONDS) == 3, (tmp_path / "a.log").read_text()[-2000:]
    assert "committed nothing" in (tmp_path / "a.log").read_text()
    remote = read_tree(store)
    assert remote.tree.parent is None and f":{b.pid}:" in (remote.tree.holder or "")  # one commit: the taker's
