"""The reconcile flow in Prefect's test harness, over real files, a real DuckDB snapshot and a real Postgres."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import psycopg
import pytest
from polars.testing import assert_frame_equal

from memberpulse.flows.reconcile import reconcile_flow
from memberpulse.landing import mock_events as mock
from tests.support.reconcile_testkit import (
    AS_OF,
    append_raw,
    make_settings,
    member,
    raw_record,
    scenario,
    snapshot_members,
)

# slow: Prefect's test harness and the real PostgreSQL server
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _design_score(days: float, half_life: float = 7.0) -> int:
    return math.floor(100 * 0.5 ** (days / half_life) + 0.5)


def test_scores_follow_the_scoring_rules(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    append_raw(tmp_path, scenario())

    result = reconcile_flow(as_of=AS_OF, settings=settings)

    assert result["events_ingested"] == 7 and result["rejects"] == 0
    rows = {r["membership_id"]: r for r in snapshot_members(settings).to_dicts()}
    m1, m2, m3, m4 = (rows[f"mem_{n:04d}"] for n in (1, 2, 3, 4))
    # joined T-10d, accessed T-5d and T-3.5d: 3.5 days since last active
    assert (m1["engagement_score"], m1["status"], m1["total_sessions"]) == (_design_score(3.5), "active", 2)
    assert m1["engagement_score"] == 71 and m1["activity_score"] == 71
    assert m1["last_active"] == AS_OF - timedelta(days=3.5)
    assert m1["joined_at"] == AS_OF - timedelta(days=10)
    # v1 membership.activated at T-20d, never seen since: at risk
    assert (m2["engagement_score"], m2["status"]) == (_design_score(20), "at_risk")
    assert m2["engagement_score"] == 14
    # joined T-40d: past AT_RISK_DAYS
    assert (m3["engagement_score"], m3["status"]) == (_design_score(40), "inactive")
    # left two days ago: kept, score 0, inactive, not valid
    assert (m4["engagement_score"], m4["status"], m4["valid"]) == (0, "inactive", False)
    assert result["members_by_status"] == {"active": 1, "at_risk": 1, "inactive": 2}
    assert result["newly_at_risk_count"] == 1 and result["newly_at_risk"][0]["membership_id"] == "mem_0002"


def test_every_run_leaves_a_summary_and_an_at_risk_table(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    append_raw(tmp_path, scenario())
    result = reconcile_flow(as_of=AS_OF, settings=make_settings(tmp_path), return_state=True)
    run_id = result.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    by_key = {a.key: a for a in artifacts}
    summary = str(by_key["reconcile-summary"].data)
    assert "| events ingested | 7 |" in summary and "| at_risk | 1 |" in summary
    assert "mem_0002" in str(by_key["members-newly-at-risk"].data)


def test_incremental_runs_equal_one_full_refresh(tmp_path: Path) -> None:
    lines = scenario()
    duplicate = lines[1]
    later = raw_record(mock.accessed(member(2), accessed_at=AS_OF - timedelta(days=1)))
    settings = make_settings(tmp_path / "incremental")
    batches = [lines[:3], [*lines[3:], duplicate], [later, lines[0]]]
    for batch in batches:
        append_raw(settings.data_dir, batch)
        reconcile_flow(as_of=AS_OF, settings=settings)
    incremental = snapshot_members(settings)

    full = reconcile_flow(as_of=AS_OF, full_refresh=True, settings=settings)
    assert full["events_ingested"] == 8  # 10 records, 2 repeated deliveries
    assert_frame_equal(snapshot_members(settings), incremental)

    once = make_settings(tmp_path / "once")
    append_raw(once.data_dir, [line for batch in reversed(batches) for line in batch])
    reconcile_flow(as_of=AS_OF, settings=once)
    assert_frame_equal(snapshot_members(once), incremental)
    assert incremental.filter(pl.col("membership_id") == "mem_0002")["status"].item() == "active"


def test_torn_and_malformed_lines_are_rejected_or_deferred_never_lost(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    path = append_raw(tmp_path, [*scenario()[:2], raw_record("{not json"), b"this is not a raw record\n"])
    with open(path, "ab") as fh:
        fh.write(b'{"webhook_id":"msg_torn"')  # a write still in flight: no newline yet

    first = reconcile_flow(as_of=AS_OF, settings=settings)
    assert (first["events_ingested"], first["rejects"]) == (2, 2)

    with open(path, "ab") as fh:  # the in-flight write completes
        fh.write(
            b',"received_at":"2026-11-27T12:00:00Z","signed_at":1,"scheme":"standard","event_type":null,"body":"{}"}\n'
        )
    second = reconcile_flow(as_of=AS_OF, settings=settings)
    # A well-formed record of no type we know is kept and counted, never dropped.
    assert (second["records_read"], second["events_ingested"], second["unknown_events"]) == (1, 1, 1)
    with duckdb.connect(str(settings.snapshots_dir / "latest.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM events").fetchone() == (3,)


def test_backdated_as_of_ignores_later_facts(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    append_raw(tmp_path, scenario())
    reconcile_flow(as_of=AS_OF, settings=settings)

    earlier = AS_OF - timedelta(days=4)  # before m1's last access and m4's departure
    backdated = reconcile_flow(as_of=earlier, settings=settings)
    with duckdb.connect(backdated["snapshot_path"], read_only=True) as con:  # its own file, not latest.duckdb
        frame = con.sql("SELECT * FROM member_activity").pl()
    rows = {r["membership_id"]: r for r in frame.to_dicts()}
    assert rows["mem_0001"]["last_active"] == AS_OF - timedelta(days=5)
    assert rows["mem_0001"]["engagement_score"] == _design_score(1.0)
    assert rows["mem_0001"]["total_sessions"] == 1
    assert rows["mem_0004"]["valid"] is True and rows["mem_0004"]["status"] == "at_risk"  # 26 days idle
    assert rows["mem_0004"]["engagement_score"] == _design_score(26)


def test_publishes_only_changed_rows_to_postgres(tmp_path: Path, migrated_postgres_dsn: str) -> None:
    settings = make_settings(tmp_path, SUPABASE_DB_URL=migrated_postgres_dsn)
    append_raw(tmp_path, scenario())

    first = reconcile_flow(as_of=AS_OF, settings=settings)
    assert (first["inserted"], first["updated"], first["unchanged"]) == (4, 0, 0)
    with psycopg.connect(migrated_postgres_dsn) as con:
        before = con.execute("SELECT membership_id, updated_at FROM member_activity ORDER BY 1").fetchall()
        # The guide's check query, verbatim.
        seed_rows = con.execute(
            "SELECT member_name, status, activity_score, last_active, updated_at FROM member_activity "
            "ORDER BY updated_at DESC LIMIT 10;"
        ).fetchall()
    assert len(seed_rows) == 4 and {r[1] for r in seed_rows} == {"active", "at_risk", "inactive"}

    again = reconcile_flow(as_of=AS_OF, settings=settings)
    assert (again["inserted"], again["updated"]) == (0, 0)
    append_raw(tmp_path, [raw_record(mock.accessed(member(3), accessed_at=AS_OF - timedelta(hours=1)))])
    third = reconcile_flow(as_of=AS_OF, settings=settings)
    assert (third["inserted"], third["updated"]) == (0, 1)
    with psycopg.connect(migrated_postgres_dsn) as con:
        after = con.execute("SELECT membership_id, updated_at FROM member_activity ORDER BY 1").fetchall()
        runs = con.execute("SELECT status, count(*) FROM pipeline_runs GROUP BY 1").fetchall()
    changed = [a[0] for a, b in zip(after, before, strict=True) if a[1] != b[1]]
    assert changed == ["mem_0003"]
    assert runs == [("completed", 3)]


def test_redelivery_in_a_later_run_does_not_count_again(tmp_path: Path) -> None:
    """A legacy body with no time of its own is dated by its signature, which differs on Whop's retry."""
    settings = make_settings(tmp_path)
    five = member(5)
    left_without_time = {
        "action": "membership.went_invalid",
        "data": {"id": five.membership_id, "user_id": five.user_id},
    }
    append_raw(tmp_path, [
        raw_record(mock.went_valid(five, created_at=AS_OF - timedelta(days=10))),
        raw_record(left_without_time, webhook_id="msg_left_5", received_at=AS_OF - timedelta(days=5)),
        raw_record(mock.went_valid(five, created_at=AS_OF - timedelta(days=3)), webhook_id="msg_rejoin_5"),
    ])  # fmt: skip
    reconcile_flow(as_of=AS_OF, settings=settings)
    append_raw(
        tmp_path, [raw_record(left_without_time, webhook_id="msg_left_5", received_at=AS_OF - timedelta(days=1))]
    )
    again = reconcile_flow(as_of=AS_OF, settings=settings)

    assert again["records_read"] == 1 and again["events_ingested"] == 0
    row = snapshot_members(settings).row(0, named=True)
    assert (row["valid"], row["status"], row["engagement_score"]) == (True, "active", _design_score(3))
