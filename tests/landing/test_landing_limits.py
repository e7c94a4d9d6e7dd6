"""Slow, idle and oversized clients against a real ``memberpulse serve`` process, over raw sockets.

Each case held a connection (or the event loop) for as long as the client liked before the connection limits
existed; now each is answered and closed within seconds, and real webhooks keep landing meanwhile.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from memberpulse.contracts.quarantine import FIRST_OF_EACH_REASON
from memberpulse.landing import mock_events as mock
from memberpulse.landing.quarantine import SEGMENTS_PER_CAP
from tests.support.landing_process import SECRET, LandingProcess, landing_process

pytestmark = pytest.mark.slow

LIMITS = {
    "MEMBERPULSE_HEADER_TIMEOUT_SECONDS": "1",
    "MEMBERPULSE_BODY_TIMEOUT_SECONDS": "1",
    "MEMBERPULSE_KEEP_ALIVE_TIMEOUT_SECONDS": "1",
    "MEMBERPULSE_MAX_HEADER_BYTES": "8192",
    "MEMBERPULSE_MAX_PENDING_BODY_BYTES": str(1024 * 1024),
}
HEAD = b"POST /api/webhooks/whop HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LandingProcess]:
    with landing_process(tmp_path_factory.mktemp("limits"), **LIMITS) as running:
        yield running


def _connect(landing: LandingProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", landing.port), timeout=10)


def _until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:  # closed with our unread bytes still in its buffer: the answer may be lost
        received += b"(reset)"
    return received, time.monotonic() - started


def _webhook(landing: LandingProcess, *, padding: int = 0) -> tuple[int, float]:
    payload = mock.mock_event("membership.went_valid")
    if padding:
        payload["padding"] = "p" * padding
    body, headers = mock.signed_delivery(payload, secret=SECRET)
    started = time.monotonic()
    status = httpx.post(landing.url, content=body, headers=headers, timeout=30).status_code
    return status, time.monotonic() - started


def test_a_connection_that_sends_nothing_is_closed(landing: LandingProcess) -> None:
    with _connect(landing) as sock:
        answer, waited = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and waited < 3


def test_a_head_trickled_byte_by_byte_is_cut_off(landing: LandingProcess) -> None:
    with _connect(landing) as sock:
        sock.sendall(HEAD)
        started = time.monotonic()
        with pytest.raises(OSError):  # the server closes while we are still trickling
            while time.monotonic() - started < 10:
                sock.sendall(b"x")
                time.sleep(0.2)
        waited = time.monotonic() - started
    assert waited < 3


def test_a_body_that_stops_halfway_is_cut_off_and_its_bytes_released(landing: LandingProcess) -> None:
    with _connect(landing) as sock:
        sock.sendall(HEAD + b"content-length: 1000\r\n\r\n" + b"{" * 100)
        answer, waited = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"body" in answer and waited < 3
    assert _webhook(landing)[0] == 200


def test_an_idle_kept_alive_connection_is_closed(landing: LandingProcess) -> None:
    with _connect(landing) as sock:
        sock.sendall(b"GET /api/webhooks/whop HTTP/1.1\r\nhost: x\r\n\r\n")
        answer, waited = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and waited < 3


def test_an_oversized_head_is_refused_early_while_webhooks_keep_landing(landing: LandingProcess) -> None:
    refused: list[bytes] = []

    def stream_huge_header() -> None:
        with _connect(landing) as sock:
            sock.sendall(HEAD + b"x-padding: ")
            try:
                for _ in range(200 * 16):  # up to 200 MiB, 64 KiB at a time
                    sock.sendall(b"a" * 65536)
            except OSError:
                pass
            refused.append(_until_closed(sock)[0])

    streamer = threading.Thread(target=stream_huge_header)
    streamer.start()
    webhooks = [_webhook(landing) for _ in range(5)]
    streamer.join(30)
    assert not streamer.is_alive()
    assert refused and refused[0].startswith(b"HTTP/1.1 431 ")
    assert all(status == 200 for status, _ in webhooks)
    assert max(seconds for _, seconds in webhooks) < 1
    assert "431: request head over 8192 bytes" in landing.log()


def test_unfinished_bodies_past_the_process_cap_are_refused(landing: LandingProcess) -> None:
    sockets = [_connect(landing) for _ in range(4)]
    try:
        for sock in sockets:  # 4 × 400 KiB of 900 KiB bodies against a 1 MiB cap
            sock.sendall(HEAD + b"content-length: 921600\r\n\r\n" + b" " * 409600)
        waits = [_until_closed(sock)[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    assert max(waits) < 3
    assert "503: unfinished request bodies over 1048576 bytes" in landing.log()
    # Every byte held was released: two bodies of 700 KiB, one after the other, both fit under the cap again.
    assert [_webhook(landing, padding=700 * 1024)[0] for _ in range(2)] == [200, 200]


def test_a_flood_of_forged_requests_logs_a_bounded_number_of_lines(landing: LandingProcess) -> None:
    with httpx.Client(timeout=10) as client:
        statuses = {client.post(landing.url, content=b"{}").status_code for _ in range(300)}
    assert statuses == {403}
    metrics = httpx.get(f"http://127.0.0.1:{landing.port}/metrics", timeout=10).text
    assert 'outcome="bad_signature"} 300' in metrics
    assert 1 <= landing.log().count("Rejected with 403") <= 2


def test_the_quarantine_cap_holds_for_the_directory_with_four_landing_processes(tmp_path: Path) -> None:
    cap = 64 * 1024
    env = {"MEMBERPULSE_LANDING_WORKERS": "2", "MEMBERPULSE_QUARANTINE_MAX_BYTES": str(cap)}
    # Two servers of two processes each on one data dir: requests alternate between the servers, so at least
    # two processes write to the quarantine whatever way the kernel spreads connections within a server.
    with (
        landing_process(tmp_path, log_name="serve-a.log", **env) as first,
        landing_process(tmp_path, log_name="serve-b.log", **env) as second,
    ):

        def flood(i: int) -> list[int]:
            url = (first, second)[i % 2].url
            statuses = []
            for _ in range(25):  # a fresh connection each time, so the kernel spreads them over the processes
                with httpx.Client(timeout=10) as client:
                    statuses.append(client.post(url, content=b"x" * 4096).status_code)
            return statuses

        with ThreadPoolExecutor(8) as pool:
            statuses = [s for batch in pool.map(flood, range(8)) for s in batch]
    assert set(statuses) == {403}
    files = [p for p in (tmp_path / "quarantine").glob("*.ndjson") if p.name != FIRST_OF_EACH_REASON]
    total = sum(p.stat().st_size for p in files)
    assert len({p.name.rsplit("-", 1)[0] for p in files}) >= 2  # several processes did write
    # Filled to the cap, never past it (200 rejects would be ~900 KiB): only whole old files made room.
    assert cap - 2 * cap // SEGMENTS_PER_CAP < total <= cap
    counts = [json.loads(line)["reason_count"] for p in files for line in p.read_bytes().splitlines()]
    assert len(set(counts)) == len(counts) and max(counts) == 200  # one count for the directory, every refusal
