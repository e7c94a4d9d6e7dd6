"""Run an ASGI app with uvicorn in a background thread on a free local port (tests and the demo)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


@contextmanager
def serve_in_thread(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    base_path: str = "/api/v1",
    startup_timeout: float = 10.0,
) -> Iterator[str]:
    """Serve ``app`` until the block exits; yields the base URL, e.g. ``http://127.0.0.1:43121/api/v1``.

    The socket is bound here (port 0 = the kernel picks a free one) and handed to uvicorn, so there is no race
    between choosing a port and listening on it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="whop-simulator", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the simulator did not start on {host}:{bound_port}")
            time.sleep(0.01)
        yield f"http://{host}:{bound_port}{base_path.rstrip('/')}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
