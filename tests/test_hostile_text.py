"""Text PostgreSQL cannot store (NUL, lone surrogates), sent through a real ``memberpulse serve`` process, must
not stop publishing: signed webhooks are published with each NUL replaced by U+FFFD, forged ones are recorded
in ``webhook_failures``, and the DuckDB snapshot matches Supabase."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import psycopg
import pytest

from memberpulse.flows.reconcile import reconcile_flow
from memberpulse.landing import mock_events as mock
from tests.support.landing_process import SECRET, landing_process
from tests.support.reconcile_testkit import make_settings, member

FFFD = "\ufffd"


def _signed(url: str, payload: dict[str, object]) -> int:
    body = json.dumps(payload).encode()  # ensure_ascii: NUL and lone surrogates travel as \u escapes
    headers = mock.standard_headers(body, secret=SECRET)
    return httpx.post(url, content=body, headers=headers, timeout=10).status_code


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_nul_in_signed_and_forged_webhooks_does_not_stop_publishing(tmp_path: Path, migrated_postgres_dsn: str) -> None:
    now = datetime.now(UTC)
    evil_id = mock.went_valid(member(1), created_at=now)
    evil_id["data"]["id"] = "mem_\u0000evil"  # type: ignore[index]
    evil_name = mock.went_valid(member(2), created_at=now)
    evil_name["data"]["username"] = "bad\u0000name"  # type: ignore[index]
    surrogate = mock.went_valid(member(3), created_at=now)
    surrogate["data"]["username"] = "half\ud800pair"  # type: ignore[index]
    plain = mock.went_valid(member(4), created_at=now)
    with landing_process(tmp_path) as landing:
        assert [_signed(landing.url, p) for p in (evil_id, evil_name, surrogate, plain)] == [200] * 4
        forged = httpx.post(
            landing.url,
            content=b'{"action":"membership.went_valid","data":{"id":"\x00"}}',
            headers={"content-type": "application/json", "webhook-id": "msg_forged\x01"[:10]},
            timeout=10,
        )
        assert forged.status_code == 403
    settings = make_settings(tmp_path, SUPABASE_DB_URL=migrated_postgres_dsn)

    result = reconcile_flow(as_of=datetime.now(UTC), settings=settings)

    assert result["status"] == "completed" and result["inserted"] == 4
    with psycopg.connect(migrated_postgres_dsn) as con:
        published = dict(con.execute("SELECT membership_id, member_name FROM member_activity").fetchall())
        failures = con.execute("SELECT reason, body_prefix FROM webhook_failures").fetchall()
    assert published[f"mem_{FFFD}evil"] == "member1"
    assert published["mem_0002"] == f"bad{FFFD}name"
    assert "\x00" not in "".join(published) and "\x00" not in "".join(published.values())
    assert len(published) == 4 and published["mem_0004"] == "member4"
    assert any(reason.startswith("landing 403") and FFFD in body for reason, body in failures), failures
    with duckdb.connect(str(settings.snapshots_dir / "latest.duckdb"), read_only=True) as con:
        snapshot = dict(con.sql("SELECT membership_id, member_name FROM member_activity").fetchall())
    assert snapshot == published
