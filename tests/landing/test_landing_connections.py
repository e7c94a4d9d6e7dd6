"""More idle clients than the landing has file descriptors, against a real ``memberpulse serve`` whose open-file
limit is lowered, over real sockets on 127.0.0.1; and which connection goes past the cap, on the in-process
server (whose connections the test can count).

Without a connection cap, idle clients that reconnect as soon as they are dropped held every descriptor: accept()
failed with EMFILE, libuv then closed every connection waiting to be accepted, and real webhooks were reset for as
long as the flood lasted. With it, each new connection past the cap closes the idlest idle one, so a webhook
always gets in.
"""

from __future__ import annotations

import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from memberpulse.landing import mock_events as mock
from memberpulse.landing.protocol import GuardedHttpToolsProtocol
from tests.support.landing_process import SECRET, landing_process
from tests.support.landing_testkit import make_settings, read_records, running_server

pytestmark = pytest.mark.slow

FD_LIMIT = 256
IDLE_CLIENTS = 2 * FD_LIMIT  # more than the process could hold even if it needed no other descriptor
WEBHOOKS = 20
PROMPT_SECONDS = 5.0  # each webhook's 200, connection included; unhindered it takes milliseconds


def _fd_limit(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class IdleFlood(threading.Thread):
    """``clients`` connections that send nothing and reconnect as soon as the server drops them."""

    def __init__(self, port: int, clients: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.clients = clients
        self.stop = threading.Event()
        self.opened = 0  # connections opened, reconnections included
        self.dropped = 0  # connections the server closed
        self._selector = selectors.DefaultSelector()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self._top_up()
                for key, _ in self._selector.select(timeout=0.05):
                    self._reap(key.fileobj)  # type: ignore[arg-type]
        finally:
            for key in list(self._selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]

    def _top_up(self) -> None:
        while len(self._selector.get_map()) < self.clients and not self.stop.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.25)
            except OSError:
                return  # the accept queue is full: try again after reaping
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)
            self.opened += 1

    def _reap(self, sock: socket.socket) -> None:
        try:
            if sock.recv(65536):
                return  # an answer (408) before the close: wait for the close itself
        except BlockingIOError:
            return
        except OSError:
            pass
        self._selector.unregister(sock)
        sock.close()
        self.dropped += 1


def _webhook(url: str, n: int) -> tuple[str, int | None, float]:
    """One real signed webhook on a fresh connection: (webhook id, status or None, seconds)."""
    payload = mock.mock_event("membership.went_valid", mock.MockMember(membership_id=f"mem_fd_{n}"))
    body, headers = mock.signed_delivery(payload, secret=SECRET)
    started = time.monotonic()
    try:
        status: int | None = httpx.post(url, content=body, headers=headers, timeout=30).status_code
    except httpx.HTTPError:
        status = None
    return headers["webhook-id"], status, time.monotonic() - started


def test_idle_clients_past_the_fd_limit_never_keep_a_webhook_out(tmp_path: Path) -> None:
    with landing_process(tmp_path, preexec_fn=lambda: _fd_limit(FD_LIMIT, FD_LIMIT)) as landing:
        flood = IdleFlood(landing.port, IDLE_CLIENTS)
        flood.start()
        try:
            deadline = time.monotonic() + 60
            while flood.opened < IDLE_CLIENTS and time.monotonic() < deadline:
                time.sleep(0.05)
            assert flood.opened >= IDLE_CLIENTS, "the idle clients could not even connect"
            results = [_webhook(landing.url, n) for n in range(WEBHOOKS)]
        finally:
            flood.stop.set()
            flood.join(30)
        log = landing.log()
    slow = [(status, round(seconds, 2)) for _, status, seconds in results if status != 200 or seconds > PROMPT_SECONDS]
    assert slow == [], f"{len(slow)} of {WEBHOOKS} webhooks were not answered 200 promptly: {slow}\n{log[-2000:]}"
    assert flood.dropped > 0  # the server did drop idle clients to make room
    stored = {record["webhook_id"] for record in read_records(tmp_path / "landing")}
    assert {webhook_id for webhook_id, _, _ in results} <= stored  # every 200 was stored


def test_serve_raises_its_open_file_limit_to_the_hard_limit(tmp_path: Path) -> None:
    with landing_process(tmp_path, preexec_fn=lambda: _fd_limit(FD_LIMIT, 4 * FD_LIMIT)) as landing:
        limits = Path(f"/proc/{landing.proc.pid}/limits").read_text()
        log = landing.log()
    (soft, hard) = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups()  # type: ignore[union-attr]
    assert (int(soft), int(hard)) == (4 * FD_LIMIT, 4 * FD_LIMIT)
    assert f"open-file limit raised from {FD_LIMIT} to {4 * FD_LIMIT}" in log


def test_a_connection_cap_the_open_file_limit_cannot_hold_is_refused_at_start(tmp_path: Path) -> None:
    env = {**os.environ, "WHOP_WEBHOOK_SECRET": SECRET, "MEMBERPULSE_DATA_DIR": str(tmp_path)}
    serve = subprocess.run(
        [sys.executable, "-m", "memberpulse", "serve", "--port", "0"],
        env={**env, "MEMBERPULSE_MAX_CONNECTIONS": "1000"},
        preexec_fn=lambda: _fd_limit(FD_LIMIT, FD_LIMIT),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert serve.returncode == 2, serve.stderr
    assert "MEMBERPULSE_MAX_CONNECTIONS=1000 does not fit the open-file limit of 256 (at most 160" in serve.stderr
    assert "Listening" not in serve.stderr


def _wait(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def _connections() -> tuple[int, int]:
    """(open, idle) connections of the in-process server's event loop."""
    registry = GuardedHttpToolsProtocol._connections
    return (0, 0) if registry is None else (len(registry.watched), len(registry.idle))


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(1)
    except BlockingIOError:
        return True  # nothing to read and not closed
    finally:
        sock.setblocking(True)
    return False


def test_past_the_cap_the_idlest_idle_connection_goes_and_none_mid_request_ever_does(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, MEMBERPULSE_MAX_CONNECTIONS=4, MEMBERPULSE_KEEP_ALIVE_TIMEOUT_SECONDS=60,
        MEMBERPULSE_HEADER_TIMEOUT_SECONDS=60, MEMBERPULSE_BODY_TIMEOUT_SECONDS=60,
    )  # fmt: skip
    body, headers = mock.signed_delivery(mock.mock_event("membership.went_valid"), secret=settings.webhook_secrets[0])
    head = "POST /api/webhooks/whop HTTP/1.1\r\nhost: x\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with running_server(settings, guarded=True) as server, ExitStack() as stack:
        address = ("127.0.0.1", urlsplit(server.base).port or 0)

        def connect() -> socket.socket:
            return stack.enter_context(socket.create_connection(address, timeout=10))

        kept_alive = connect()
        kept_alive.sendall(b"GET /api/webhooks/whop HTTP/1.1\r\nhost: x\r\n\r\n")
        assert kept_alive.recv(65536).startswith(b"HTTP/1.1 200 ")
        _wait(lambda: _connections() == (1, 1), "the answered connection is kept alive, idle")
        silent = [connect(), connect()]
        _wait(lambda: _connections() == (3, 3), "two silent connections are idle too")
        busy = connect()
        busy.sendall(f"{head}content-length: {len(body)}\r\n\r\n".encode())  # the head, not the body yet
        _wait(lambda: _connections() == (4, 3), "the fourth is mid-request")

        newcomer = connect()  # past the cap: the one idle longest goes, the kept-alive one
        assert _closed_by_server(kept_alive)
        assert all(_still_open(sock) for sock in (*silent, busy, newcomer))

        for sock in (*silent, newcomer):
            sock.sendall(b"POST /api/webhooks/whop HTTP/1.1\r\n")
        _wait(lambda: _connections() == (4, 0), "every connection is mid-request")
        late = connect()  # nothing idle to close: the newcomer is refused instead
        assert _closed_by_server(late)
        busy.sendall(body)  # the connection mid-request all along finishes its request
        assert busy.recv(65536).startswith(b"HTTP/1.1 200 ")
    assert [record["webhook_id"] for record in read_records(tmp_path / "landing")] == [headers["webhook-id"]]
