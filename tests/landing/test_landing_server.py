"""Real ``memberpulse serve`` processes: crash safety under SIGKILL, several workers, refusing to start
(no secret, a port already in use)."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from memberpulse.landing.mock_events import MockMember, mock_event, signed_delivery
from tests.support.landing_testkit import SECRET, WEBHOOK_PATH, complete_lines, free_port

pytestmark = pytest.mark.slow


@contextmanager
def serve_process(
    data_dir: Path,
    *,
    workers: int = 1,
    max_file_bytes: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {
        **os.environ,
        "WHOP_WEBHOOK_SECRET": SECRET,
        "MEMBERPULSE_DATA_DIR": str(data_dir),
        "MEMBERPULSE_LANDING_WORKERS": str(workers),
        "MEMBERPULSE_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "memberpulse", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=data_dir.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=None if max_file_bytes is None else lambda: _limit_file_size(max_file_bytes),
    )
    url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not come up: {process.stderr.read().decode() if process.stderr else ''}")
            time.sleep(0.1)
        yield process, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr:
            process.stderr.close()


def _limit_file_size(limit: int) -> None:
    # A real write failure: past the limit write() fails with EFBIG (Python ignores SIGXFSZ).
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def stored_lines(landing_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for p in sorted(landing_dir.rglob("*.ndjson")) for line in complete_lines(p)]


def test_every_acknowledged_webhook_survives_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acked: dict[str, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()
    cut_off: list[int] = []  # clients whose request was in flight when the server died

    def client_loop(worker: int) -> None:
        with httpx.Client(timeout=5) as client:
            for n in range(3000):  # bounded: the kill comes long before this runs out
                if stop.is_set():
                    return
                member = MockMember(membership_id=f"mem_{worker}_{n}")
                body, headers = signed_delivery(mock_event("membership.accessed", member), secret=SECRET)
                try:
                    response = client.post(url, content=body, headers=headers)
                except httpx.HTTPError:
                    cut_off.append(worker)
                    return  # the server is gone
                if response.status_code == 200:
                    with lock:
                        acked[headers["webhook-id"]] = body

    with serve_process(data) as (process, url):
        threads = [threading.Thread(target=client_loop, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 400 and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # mid-stream: six clients are posting right now
        process.wait(10)
        stop.set()
        for t in threads:
            t.join(10)

    assert len(acked) >= 400
    assert cut_off, "the kill should land while clients are posting"
    segments = list((data / "landing").rglob("*.ndjson"))
    assert segments
    records = stored_lines(data / "landing")  # every complete line parses (json.loads raised otherwise)
    by_id = {str(r["webhook_id"]): r for r in records}
    missing = set(acked) - set(by_id)
    assert not missing, f"{len(missing)} acknowledged webhooks were lost"
    for webhook_id, body in acked.items():
        assert str(by_id[webhook_id]["body"]).encode() == body
    # Only a final, unterminated tail may be incomplete; everything before it is whole lines.
    for segment in segments:
        data_bytes = segment.read_bytes()
        assert data_bytes.count(b"\n") == len(complete_lines(segment))


def test_failing_writes_answer_503_and_never_lose_an_acknowledged_webhook(tmp_path: Path) -> None:
    data = tmp_path / "data"
    statuses: dict[str, int] = {}
    with serve_process(data, max_file_bytes=16 * 1024) as (_process, url), httpx.Client(timeout=5) as client:
        for n in range(60):  # ~600-byte records: each 16 KiB segment fills up and its next write fails
            member = MockMember(membership_id=f"mem_{n}")
            body, headers = signed_delivery(mock_event("membership.went_valid", member), secret=SECRET)
            statuses[headers["webhook-id"]] = client.post(url, content=body, headers=headers).status_code
    assert set(statuses.values()) == {200, 503}
    stored = {str(r["webhook_id"]) for r in stored_lines(data / "landing")}
    acked = {i for i, status in statuses.items() if status == 200}
    assert acked <= stored
    assert len(list((data / "landing").rglob("*.ndjson"))) >= 2  # a failed segment is left closed


def test_two_workers_each_write_their_own_segments(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sent = []
    with serve_process(data, workers=2) as (_process, url), httpx.Client(timeout=5) as client:

        def post_some(count: int) -> None:
            with httpx.Client(timeout=5) as own:  # fresh connections spread over both workers
                for _ in range(count):
                    body, headers = signed_delivery(mock_event("membership.went_valid"), secret=SECRET)
                    assert own.post(url, content=body, headers=headers).status_code == 200
                    sent.append(headers["webhook-id"])

        threads = [threading.Thread(target=post_some, args=(25,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert client.get(url).status_code == 200
    records = stored_lines(data / "landing")
    assert sorted(str(r["webhook_id"]) for r in records) == sorted(sent)
    writers = {p.name.rsplit("-", 1)[0] for p in (data / "landing").rglob("*.ndjson")}
    assert 1 <= len(writers) <= 2  # one writer per process that received traffic, never a shared file


def test_serve_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WHOP_WEBHOOK_SECRET"}
    env["MEMBERPULSE_DATA_DIR"] = str(tmp_path / "data")
    result = subprocess.run(
        [sys.executable, "-m", "memberpulse", "serve", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "WHOP_WEBHOOK_SECRET" in result.stderr
    assert not (tmp_path / "data").exists()


def _serve_once(cwd: Path, port: int, *, workers: int = 1) -> subprocess.CompletedProcess[str]:
    """``memberpulse serve`` on 127.0.0.1:``port`` at log level INFO (so a start-up line would show), expected
    to exit by itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMBERPULSE_", "WHOP_"))}
    env.update(
        WHOP_WEBHOOK_SECRET=SECRET,
        MEMBERPULSE_DATA_DIR=str(cwd / "data"),
        MEMBERPULSE_LANDING_WORKERS=str(workers),
        MEMBERPULSE_LOG_LEVEL="INFO",
    )
    return subprocess.run(
        [sys.executable, "-m", "memberpulse", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,  # generous: a serve that did start would be killed here and the test would fail
    )


def _in_use_line(port: int) -> str:
    return f"memberpulse serve: 127.0.0.1:{port} is already in use (hint: stop the other process or pass --port)\n"


@pytest.mark.parametrize(
    ("workers", "holder_reuses_port"),
    [(1, False), (2, False), (1, True)],
    ids=["one-worker", "two-workers", "holder-with-SO_REUSEPORT"],
)
def test_serve_on_a_port_another_program_listens_on_exits_2_before_claiming_to_listen(
    tmp_path: Path, workers: int, holder_reuses_port: bool
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        if holder_reuses_port:  # a program that would share the port with anyone who asks the same: we do not
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))  # the OS picks a free port
        holder.listen()
        port = holder.getsockname()[1]
        result = _serve_once(tmp_path, port, workers=workers)
    assert result.returncode == 2, result.stderr
    assert result.stderr == _in_use_line(port)
    assert "Listening" not in result.stdout + result.stderr


def test_a_second_serve_on_the_same_port_exits_2_and_the_first_keeps_serving(tmp_path: Path) -> None:
    (tmp_path / "first").mkdir()
    with serve_process(tmp_path / "first" / "data") as (_process, url), httpx.Client(timeout=5) as client:
        port = httpx.URL(url).port
        assert port is not None
        result = _serve_once(tmp_path, port)
        assert client.get(url).status_code == 200
    assert result.returncode == 2, result.stderr
    assert result.stderr == _in_use_line(port)
    assert "Listening" not in result.stdout + result.stderr
