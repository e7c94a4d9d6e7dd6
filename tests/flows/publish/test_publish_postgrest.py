"""The PostgREST path: supabase-py against a PostgREST STAND-IN (tests/support/postgrest_standin.py) over a
real PostgreSQL database. The real PostgREST cannot be installed here; the stand-in implements only the
upsert our client sends and records every request, so these tests pin down exactly what goes over the wire.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest

from memberpulse.errors import PublishError, PublishUnavailable
from memberpulse.flows.publish import DEFAULT_PUBLISH_CONFIG, PipelineRun, PostgrestPublisher, PublishedState
from memberpulse.flows.publish._schema import MEMBER_ACTIVITY_COLUMNS
from tests.support.postgres import PostgresServer, free_port
from tests.support.postgrest_standin import PostgrestStandIn, run_postgrest_standin
from tests.support.publish_data import T0, SleepRecorder, members, read_members

pytestmark = pytest.mark.slow  # a PostgREST stand-in server over the real PostgreSQL

SERVICE_KEY = "test-service-role-key"
ANON_KEY = "test-anon-key"
T1, T2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)


@pytest.fixture
def standin(migrated_postgres_dsn: str, postgres_server: PostgresServer) -> Iterator[PostgrestStandIn]:
    # Like PostgREST, the stand-in logs in as `authenticator` and switches to the key's role per request.
    dbname = migrated_postgres_dsn.rsplit("/", 1)[1]
    dsn = postgres_server.dsn(dbname, user="authenticator", password="authenticator")
    with run_postgrest_standin(dsn, keys={SERVICE_KEY: "service_role", ANON_KEY: "anon"}) as server:
        yield server


def _publisher(
    url: str, tmp_path: Path, sleeps: SleepRecorder, *, key: str = SERVICE_KEY, **config: Any
) -> PostgrestPublisher:
    """A publisher with the default config but for the ``config`` fields given."""
    config_ = replace(DEFAULT_PUBLISH_CONFIG, **config)
    return PostgrestPublisher(url, key, state=PublishedState(tmp_path), config=config_, sleep=sleeps)


def test_upserts_in_batches_with_exactly_these_requests(
    standin: PostgrestStandIn, migrated_postgres_dsn: str, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    publisher = _publisher(standin.url, tmp_path, sleeps, batch_size=2)
    frame = members(3)
    result = publisher.publish_members(frame, run_at=T1)
    publisher.close()
    assert (result.inserted, result.updated, result.unchanged) == (3, 0, 0)

    assert len(standin.requests) == 2  # 3 rows, batches of 2
    for request in standin.requests:
        assert request.method == "POST"
        assert request.path == "/rest/v1/member_activity"
        assert set(request.query) == {"on_conflict", "columns"}
        assert request.query["on_conflict"] == "membership_id"
        # postgrest-py builds `columns` from a set: the order varies from run to run, the names do not.
        assert set(request.query["columns"].replace('"', "").split(",")) == set(MEMBER_ACTIVITY_COLUMNS)
        assert request.headers["apikey"] == SERVICE_KEY
        assert request.headers["authorization"] == f"Bearer {SERVICE_KEY}"
        assert request.headers["prefer"] == "return=minimal,resolution=merge-duplicates"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["content-profile"] == "public"
        assert request.headers["accept-profile"] == "public"
    expected = [
        {
            "membership_id": f"mem_{i:07d}",
            "company_id": "biz_test",
            "user_id": f"user_{i:07d}",
            "member_name": f"Member {i}",
            "email": f"m{i}@example.com",
            "status": "active",
            "engagement_score": 50,
            "last_active": (T0 - timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%S.000000+00:00"),
            "joined_at": (T0 - timedelta(days=30 + i)).strftime("%Y-%m-%dT%H:%M:%S.000000+00:00"),
            "total_sessions": i,
            "membership_status": "active",
            "valid": True,
            "updated_at": "2026-11-01T13:00:00.000000+00:00",
        }
        for i in range(3)
    ]
    assert [r.body for r in standin.requests] == [expected[:2], expected[2:]]
    stored = read_members(migrated_postgres_dsn)
    assert [(r[0], r[7], r[-1]) for r in stored] == [(f"mem_{i:07d}", 50, T1) for i in range(3)]


def test_only_changed_rows_are_sent_and_a_no_op_sends_nothing(
    standin: PostgrestStandIn, migrated_postgres_dsn: str, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    publisher = _publisher(standin.url, tmp_path, sleeps)
    publisher.publish_members(members(4), run_at=T1)
    changed = members(4).with_columns(
        engagement_score=pl.when(pl.col("membership_id") == "mem_0000002").then(pl.lit(9, pl.Int32)).otherwise(50)
    )
    result = publisher.publish_members(changed, run_at=T2)
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 3)
    upserts = [r for r in standin.requests if r.method == "POST"]
    assert [[row["membership_id"] for row in r.body] for r in upserts] == [
        [f"mem_{i:07d}" for i in range(4)],
        ["mem_0000002"],
    ]
    before = len(standin.requests)
    result = publisher.publish_members(changed, run_at=T2 + timedelta(hours=1))
    assert (result.inserted, result.updated, result.unchanged) == (0, 0, 4)
    assert [r.method for r in standin.requests[before:]] == ["HEAD"]  # the check (a count), nothing sent
    stamps = {r[0]: r[-1] for r in read_members(migrated_postgres_dsn)}
    assert stamps == {"mem_0000000": T1, "mem_0000001": T1, "mem_0000002": T2, "mem_0000003": T1}


def test_5xx_answers_are_retried_with_backoff(
    standin: PostgrestStandIn, migrated_postgres_dsn: str, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    standin.fail_next += [503, 502]
    publisher = _publisher(standin.url, tmp_path, sleeps, backoff_seconds=0.5)
    result = publisher.publish_members(members(2), run_at=T1)
    assert result.inserted == 2
    assert len(standin.requests) == 3 and standin.requests[0].body == standin.requests[2].body
    assert sleeps.calls == [0.5, 1.0]
    assert len(read_members(migrated_postgres_dsn)) == 2


def test_a_timeout_is_retried(
    standin: PostgrestStandIn, migrated_postgres_dsn: str, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    standin.hang_next.append(3.0)
    publisher = _publisher(standin.url, tmp_path, sleeps, timeout_seconds=0.3)
    assert publisher.publish_members(members(2), run_at=T1).inserted == 2
    assert len(standin.requests) == 2 and len(sleeps.calls) == 1


def test_a_target_that_stays_down_fails_after_bounded_retries_and_keeps_state(
    standin: PostgrestStandIn, migrated_postgres_dsn: str, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    _publisher(standin.url, tmp_path, sleeps).publish_members(members(2), run_at=T1)
    state_before = PublishedState(tmp_path).path.read_bytes()
    table_before = read_members(migrated_postgres_dsn)
    standin.fail_next += [503] * 10
    publisher = _publisher(standin.url, tmp_path, sleeps, max_attempts=3)
    with pytest.raises(PublishUnavailable, match="after 3 attempts"):
        publisher.publish_members(members(3), run_at=T2)
    assert len(standin.requests) == 1 + 3
    assert PublishedState(tmp_path).path.read_bytes() == state_before
    assert read_members(migrated_postgres_dsn) == table_before


def test_nothing_listening_is_unavailable(tmp_path: Path, sleeps: SleepRecorder) -> None:
    publisher = _publisher(f"http://127.0.0.1:{free_port()}", tmp_path, sleeps, max_attempts=2)
    with pytest.raises(PublishUnavailable, match="ConnectError"):
        publisher.publish_members(members(1), run_at=T1)
    assert len(sleeps.calls) == 1 and not publisher.state.path.exists()


@pytest.mark.parametrize(("key", "status"), [("not-a-key", 401), (ANON_KEY, 401)])
def test_a_refused_key_is_fatal_and_not_retried(
    standin: PostgrestStandIn, tmp_path: Path, sleeps: SleepRecorder, key: str, status: int
) -> None:
    publisher = _publisher(standin.url, tmp_path, sleeps, key=key)
    with pytest.raises(PublishError, match=f"HTTP {status}") as err:
        publisher.publish_members(members(1), run_at=T1)
    assert "SUPABASE_SERVICE_ROLE_KEY" in str(err.value)
    assert key not in str(err.value)
    assert len(standin.requests) == 1 and sleeps.calls == []


def test_runs_and_failures_go_through_the_api_too(
    standin: PostgrestStandIn, migrated_postgres_dsn: str, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    publisher = _publisher(standin.url, tmp_path, sleeps)
    publisher.record_run(PipelineRun(run_id="r-1", flow="reconcile", started_at=T1))
    finished = PipelineRun(
        run_id="r-1",
        flow="reconcile",
        started_at=T1,
        finished_at=T2,
        status="failed",
        error="PublishUnavailable: down",
    )
    publisher.record_run(finished)
    failures = pl.DataFrame(
        {"webhook_id": ["wh_1"], "event_type": [None], "reason": ["bad json"], "received_at": [T1],
         "body_prefix": ["{"]},
        schema_overrides={"received_at": pl.Datetime("us", "UTC"), "event_type": pl.Utf8},
    )  # fmt: skip
    assert publisher.record_failures(failures) == 1
    assert [r.query["on_conflict"] for r in standin.requests] == ["run_id", "run_id", "webhook_id,reason"]
    assert standin.requests[1].body[0]["finished_at"] == "2026-11-01T14:00:00.000000+00:00"
    with psycopg.connect(migrated_postgres_dsn) as conn:
        assert conn.execute("SELECT run_id, status, finished_at, error FROM pipeline_runs").fetchall() == [
            ("r-1", "failed", T2, "PublishUnavailable: down")
        ]
        assert conn.execute("SELECT webhook_id, reason, first_seen FROM webhook_failures").fetchall() == [
            ("wh_1", "bad json", T1)
        ]
