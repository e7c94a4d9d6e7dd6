"""A real ``memberpulse serve`` process on a free 127.0.0.1 port, for tests that need the whole server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.net import free_port

SECRET = "ws_process_3c9e1a7f5b2d8046"
WEBHOOK_PATH = "/api/webhooks/whop"


@dataclass
class LandingProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def landing_process(
    data_dir: Path,
    log_name: str = "serve.log",
    *,
    preexec_fn: Callable[[], None] | None = None,
    **env: str,
) -> Iterator[LandingProcess]:
    """``memberpulse serve`` with ``MEMBERPULSE_DATA_DIR=data_dir``; its stderr goes to ``data_dir/<log_name>``.

    ``preexec_fn`` runs in the child before it starts (e.g. to lower a resource limit). Stopped with SIGTERM
    (then SIGKILL) when the block ends."""
    port = free_port()
    full_env = {**os.environ, "WHOP_WEBHOOK_SECRET": SECRET, "MEMBERPULSE_DATA_DIR": str(data_dir), **env}
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / log_name
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "memberpulse", "serve", "--port", str(port)],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            preexec_fn=preexec_fn,
        )
    running = LandingProcess(proc, port, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, running.log()
            try:
                if httpx.get(running.url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "landing did not start: " + running.log()
                time.sleep(0.1)
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
