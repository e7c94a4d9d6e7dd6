"""End to end: signed webhooks into a real ``memberpulse serve`` process → the reconcile flow (Prefect test
harness) → a real PostgreSQL server and the DuckDB snapshot."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import psycopg
import pytest

from memberpulse.flows.reconcile import reconcile_flow
from memberpulse.landing import mock_events as mock
from tests.support.net import free_port
from tests.support.reconcile_testkit import make_settings, member

pytestmark = pytest.mark.slow  # a memberpulse serve process, Prefect and PostgreSQL

SECRET = "ws_e2e_1b9f4c7a2d6e8f03"
SEED_QUERY = (
    "SELECT member_name, status, activity_score, last_active, updated_at FROM member_activity "
    "ORDER BY updated_at DESC LIMIT 10;"
)


@pytest.fixture
def landing_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "WHOP_WEBHOOK_SECRET": SECRET, "MEMBERPULSE_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "memberpulse", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/api/webhooks/whop"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "landing exited"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "landing did not start"
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def _post(url: str, payload: dict[str, object], *, secret: str = SECRET, webhook_id: str | None = None) -> int:
    body, headers = mock.signed_delivery(payload, secret=secret, webhook_id=webhook_id)
    return httpx.post(url, content=body, headers=headers, timeout=10).status_code


@pytest.mark.usefixtures("prefect_harness")
def test_webhooks_to_postgres_and_snapshot(tmp_path: Path, landing_url: str, migrated_postgres_dsn: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    day = timedelta(days=1)
    fresh, fading, gone = member(1), member(2), member(3)

    statuses = [
        _post(landing_url, mock.went_valid(fresh, created_at=now - 9 * day)),
        _post(landing_url, mock.accessed(fresh, accessed_at=now - 2 * day)),
        _post(landing_url, mock.activated(fading, at=now - 14 * day), webhook_id="msg_fading_join"),
        _post(landing_url, mock.activated(fading, at=now - 14 * day), webhook_id="msg_fading_join"),  # redelivery
        _post(landing_url, mock.activated(gone, at=now - 60 * day)),
        _post(landing_url, mock.deactivated(gone, at=now - 1 * day, created_at=now - 60 * day)),
    ]
    assert statuses == [200] * 6
    assert _post(landing_url, mock.went_valid(member(9), created_at=now), secret="ws_forged") == 403

    settings = make_settings(tmp_path, SUPABASE_DB_URL=migrated_postgres_dsn)
    result = reconcile_flow(as_of=now, settings=settings)
    assert result["status"] == "completed"
    assert result["events_ingested"] == 5  # six 200s, one a redelivery; the forgery never reached the store
    assert (result["inserted"], result["updated"]) == (3, 0)
    assert result["landing_rejections"] == 1

    with psycopg.connect(migrated_postgres_dsn) as con:
        published = {r[0]: r[1:] for r in con.execute(SEED_QUERY).fetchall()}
        failures = con.execute("SELECT reason FROM webhook_failures").fetchall()
    with duckdb.connect(str(settings.snapshots_dir / "latest.duckdb"), read_only=True) as con:
        snapshot = {r[0]: r[1:] for r in con.execute(SEED_QUERY).fetchall()}
        assert con.execute("SELECT count(*) FROM events").fetchone() == (5,)

    def expected(days: float) -> int:
        return math.floor(100 * 0.5 ** (days / 7) + 0.5)

    # The guide's payloads carry a username and no display name; v1 payloads carry both.
    assert published["member1"][:3] == ("active", expected(2), now - 2 * day)
    assert published["Member 2"][:3] == ("at_risk", expected(14), now - 14 * day)
    assert published["Member 3"][:2] == ("inactive", 0)
    assert snapshot == published
    # The forgery was refused at the door, quarantined, and summarised into webhook_failures by the flow.
    assert len(failures) == 1 and failures[0][0].startswith("landing 403")
