"""Helpers for the landing tests: a real uvicorn server in a thread, and a raw-store reader.

The reader is test-only on purpose: flows read segments themselves by byte offsets. Like them, it trusts a
line only up to its ``\\n``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from memberpulse.contracts.quarantine import FIRST_OF_EACH_REASON
from memberpulse.landing.app import create_app
from memberpulse.landing.protocol import ConnectionLimits, GuardedHttpToolsProtocol
from memberpulse.settings import Settings
from tests.support.net import free_port
from tests.support.tls import ServerCert

SECRET = "ws_test_5f3c0a9e1b7d4c2a"
OTHER_SECRET = "ws_rotated_8e2b6d1f0a3c"
WEBHOOK_PATH = "/api/webhooks/whop"


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"WHOP_WEBHOOK_SECRET": SECRET, "MEMBERPULSE_DATA_DIR": str(data_dir)}
    values.update(overrides)
    return Settings(**values)


@dataclass
class RunningServer:
    url: str  # the webhook URL
    base: str
    settings: Settings
    app: Any


@contextmanager
def running_server(
    settings: Settings, *, tls: ServerCert | None = None, guarded: bool = False
) -> Iterator[RunningServer]:
    """``create_app(settings)`` under uvicorn (uvloop + httptools, as in production) on 127.0.0.1.

    ``tls``: serve HTTPS with that certificate instead of plain HTTP (the URLs then say ``https://127.0.0.1``).
    ``guarded``: with ``serve``'s protocol and its connection limits and keep-alive timeout from ``settings``.
    """
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http=GuardedHttpToolsProtocol if guarded else "httptools",
        timeout_keep_alive=settings.keep_alive_timeout_seconds if guarded else 5,
        access_log=False,
        log_level="warning",
        ssl_certfile=None if tls is None else str(tls.cert),
        ssl_keyfile=None if tls is None else str(tls.key),
    )
    limits = GuardedHttpToolsProtocol.limits
    if guarded:
        GuardedHttpToolsProtocol.limits = ConnectionLimits.from_settings(settings)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        base = f"{'http' if tls is None else 'https'}://127.0.0.1:{port}"
        yield RunningServer(url=base + WEBHOOK_PATH, base=base, settings=settings, app=app)
    finally:
        server.should_exit = True
        thread.join(10)
        GuardedHttpToolsProtocol.limits = limits  # class-wide: the next server of this process starts clean


def complete_lines(path: Path) -> list[bytes]:
    """Every complete line of a segment; an unterminated tail (a write cut short) is ignored."""
    data = path.read_bytes()
    end = data.rfind(b"\n")
    return data[: end + 1].splitlines() if end >= 0 else []


def read_records(landing_dir: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(landing_dir.rglob("*.ndjson")):
        records.extend(json.loads(line) for line in complete_lines(path))
    return records


def quarantined(quarantine_dir: Path) -> list[dict[str, Any]]:
    """Every quarantine entry (the first of each reason and the rest), oldest first."""
    entries = [json.loads(line) for path in quarantine_dir.glob("*.ndjson") for line in complete_lines(path)]
    return sorted(entries, key=lambda entry: entry["received_at"])


def rotated_bytes(quarantine_dir: Path) -> int:
    """Bytes in the entry files the cap applies to (all but the first-of-each-reason file)."""
    return sum(p.stat().st_size for p in quarantine_dir.glob("*.ndjson") if p.name != FIRST_OF_EACH_REASON)


def snapshot_tree(root: Path) -> dict[str, bytes]:
    """Path -> bytes of every file under ``root`` (byte-identical comparisons)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
