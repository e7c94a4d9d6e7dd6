"""Readiness: the start-up write probe, the health answer's ``storage`` field, the free-space floor, metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from memberpulse.landing.app import create_app
from memberpulse.landing.mock_events import MockMember, mock_event, signed_delivery
from memberpulse.landing.readiness import free_bytes_at
from tests.landing.test_landing_server import serve_process
from tests.support.landing_testkit import SECRET, make_settings, read_records, running_server
from tests.support.net import free_port


def _post(client: httpx.Client, url: str, membership_id: str) -> httpx.Response:
    body, headers = signed_delivery(mock_event("membership.went_valid", MockMember(membership_id)), secret=SECRET)
    return client.post(url, content=body, headers=headers)


@pytest.mark.slow
def test_health_reports_storage_ok_with_the_guides_fields(tmp_path: Path) -> None:
    with running_server(make_settings(tmp_path / "data")) as server, httpx.Client(timeout=10) as client:
        response = client.get(server.url)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["storage"] == "ok"
    assert body["webhook_endpoint"] == "/api/webhooks/whop" and "membership.went_valid" in body["supported_events"]


@pytest.mark.slow
def test_a_failed_write_degrades_health_until_a_write_succeeds(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "landing").write_text("a file where the landing directory should be")  # every write fails for real
    with running_server(make_settings(data)) as server, httpx.Client(timeout=10) as client:
        assert client.get(server.url).status_code == 200  # nothing has failed yet
        assert _post(client, server.url, "mem_1").status_code == 503
        degraded = client.get(server.url)
        metrics = client.get(server.base + "/metrics").text
        (data / "landing").unlink()  # the disk heals
        assert _post(client, server.url, "mem_2").status_code == 200
        healed = client.get(server.url)
    assert degraded.status_code == 503
    assert degraded.json()["status"] == "degraded"
    assert degraded.json()["storage"].startswith("last write failed: ")
    assert re.search(r'^landing_storage_ok\{host="[^"]+"\} 0$', metrics, re.M)
    assert healed.status_code == 200 and healed.json()["storage"] == "ok"
    assert len(read_records(data / "landing")) == 1


@pytest.mark.slow
def test_below_the_free_space_floor_health_is_degraded_but_webhooks_are_still_stored(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = make_settings(data, MEMBERPULSE_MIN_FREE_BYTES=str(1 << 62))  # more than any disk here has
    with running_server(settings) as server, httpx.Client(timeout=10) as client:
        health = client.get(server.url)
        stored = _post(client, server.url, "mem_floor")
        metrics = client.get(server.base + "/metrics").text
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    assert "below MEMBERPULSE_MIN_FREE_BYTES" in health.json()["storage"]
    assert stored.status_code == 200 and len(read_records(data / "landing")) == 1
    free = int(re.findall(r'^landing_data_free_bytes\{host="[^"]+"\} (\d+)$', metrics, re.M)[0])
    assert abs(free - free_bytes_at(data)) < 256 * 1024 * 1024  # other writers share this disk


def test_metrics_series_are_the_same_for_every_process_on_a_host(tmp_path: Path) -> None:
    """A restart builds a new app: the series (names and labels) it exposes must be the old ones."""

    def series(text: bytes) -> set[str]:
        return {line.rsplit(" ", 1)[0] for line in text.decode().splitlines() if not line.startswith("#")}

    settings = make_settings(tmp_path / "data")
    first = create_app(settings).state.landing.metrics.render(free_bytes=1, storage_ok=True)
    time.sleep(0.01)
    second = create_app(settings).state.landing.metrics.render(free_bytes=2, storage_ok=True)
    assert series(first) == series(second)
    assert str(os.getpid()) not in first.decode()
    assert "landing_process_start_time_seconds{host=" in first.decode()


@pytest.mark.slow
def test_serve_exits_2_at_once_on_a_data_dir_it_cannot_write(tmp_path: Path) -> None:
    env = {**os.environ, "WHOP_WEBHOOK_SECRET": SECRET, "MEMBERPULSE_DATA_DIR": "/proc/nope"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "memberpulse", "serve", "--port", str(free_port())],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "/proc/nope/landing" in lines[0] and "MEMBERPULSE_DATA_DIR" in lines[0]
    assert elapsed < 15


@pytest.mark.slow
def test_forwarded_for_is_believed_only_from_trusted_proxies(tmp_path: Path) -> None:
    def rejected_remote(data: Path, **env: str) -> object:
        with serve_process(data, extra_env=env) as (_process, url), httpx.Client(timeout=5) as client:
            forged = client.post(url, content=b"{}", headers={"x-forwarded-for": "203.0.113.9"})
            assert forged.status_code == 403
        [entry] = [json.loads(line) for p in (data / "quarantine").glob("*.ndjson") for line in p.open()]
        return entry["remote"]

    assert rejected_remote(tmp_path / "trusted") == "203.0.113.9"  # the default trusts 127.0.0.1, the client here
    untrusted = rejected_remote(tmp_path / "untrusted", MEMBERPULSE_TRUSTED_PROXIES="10.9.8.7")
    assert untrusted == "127.0.0.1"
