"""The Postgres path against a real server: COPY + one upsert, only changed rows, errors, retries."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest

from memberpulse.errors import PublishError, PublishUnavailable
from memberpulse.flows.publish import (
    DEFAULT_PUBLISH_CONFIG,
    PipelineRun,
    PostgresPublisher,
    PostgrestPublisher,
    PublishedState,
    PublishResult,
    get_publisher,
)
from memberpulse.settings import Settings
from tests.support.postgres import free_port
from tests.support.publish_data import T0, SleepRecorder, members, read_members

pytestmark = pytest.mark.slow  # the real PostgreSQL server

T1, T2, T3 = T0 + timedelta(hours=1), T0 + timedelta(hours=2), T0 + timedelta(hours=3)


def _publisher(dsn: str, warehouse: Path, *, sleep: SleepRecorder | None = None, **config: Any) -> PostgresPublisher:
    """A publisher with the default config but for the ``config`` fields given."""
    return PostgresPublisher(
        dsn, state=PublishedState(warehouse), config=replace(DEFAULT_PUBLISH_CONFIG, **config), sleep=sleep
    )


def _updated_at(dsn: str) -> dict[str, object]:
    return {row[0]: row[-1] for row in read_members(dsn)}


def test_insert_then_update_then_no_op(migrated_postgres_dsn: str, tmp_path: Path) -> None:
    publisher = _publisher(migrated_postgres_dsn, tmp_path)
    first = members(5)
    result = publisher.publish_members(first, run_at=T1)
    assert (result.inserted, result.updated, result.unchanged) == (5, 0, 0)
    assert set(_updated_at(migrated_postgres_dsn).values()) == {T1}

    second = first.with_columns(
        engagement_score=pl.when(pl.col("membership_id") == "mem_0000001").then(12).otherwise(50),
        status=pl.when(pl.col("membership_id") == "mem_0000001").then(pl.lit("at_risk")).otherwise(pl.lit("active")),
    )
    second = pl.concat([second, members(1, start=5)], how="vertical_relaxed")
    result = publisher.publish_members(second, run_at=T2)
    assert (result.inserted, result.updated, result.unchanged) == (1, 1, 4)
    stamps = _updated_at(migrated_postgres_dsn)
    assert stamps["mem_0000001"] == T2 and stamps["mem_0000005"] == T2
    assert [stamps[f"mem_{i:07d}"] for i in (0, 2, 3, 4)] == [T1] * 4

    state_before = publisher.state.path.read_bytes()
    table_before = read_members(migrated_postgres_dsn)
    result = publisher.publish_members(second, run_at=T3)
    assert (result.inserted, result.updated, result.unchanged) == (0, 0, 6)
    assert read_members(migrated_postgres_dsn) == table_before  # updated_at untouched
    assert publisher.state.path.read_bytes() == state_before
    assert result.published is not None and result.published.height == 6


def test_a_lost_warehouse_state_resends_but_the_table_keeps_unchanged_rows(
    migrated_postgres_dsn: str, tmp_path: Path
) -> None:
    _publisher(migrated_postgres_dsn, tmp_path / "a").publish_members(members(4), run_at=T1)
    before = read_members(migrated_postgres_dsn)
    # A fresh warehouse knows nothing: every row is sent, and the upsert's IS DISTINCT FROM skips them all.
    fresh = _publisher(migrated_postgres_dsn, tmp_path / "b")
    changed_one = pl.concat([members(3), members(1, start=3, score=77)], how="vertical_relaxed")
    result = fresh.publish_members(changed_one, run_at=T2)
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 3)
    assert read_members(migrated_postgres_dsn)[:3] == before[:3]
    # The rebuilt state records the updated_at the table really holds, not this run's time for every row.
    assert result.published is not None
    assert result.published["updated_at"].to_list() == [T1, T1, T1, T2]
    saved = fresh.state.load()
    assert saved is not None and saved["updated_at"].to_list() == [T1, T1, T1, T2]


def test_copy_round_trips_awkward_text_and_nulls(migrated_postgres_dsn: str, tmp_path: Path) -> None:
    names = ["", None, "a,b", 'say "hi"', "line\nbreak", r"\N", "Zoë 🚀", "tab\there"]
    frame = members(len(names)).with_columns(
        member_name=pl.Series(names, dtype=pl.Utf8), email=pl.Series([None] * len(names), dtype=pl.Utf8)
    )
    frame = frame.with_columns(last_active=pl.when(pl.col("total_sessions") == 0).then(None).otherwise("last_active"))
    _publisher(migrated_postgres_dsn, tmp_path).publish_members(frame, run_at=T1)
    with psycopg.connect(migrated_postgres_dsn) as conn:
        rows = conn.execute("SELECT member_name, email, last_active FROM member_activity ORDER BY membership_id")
        got = rows.fetchall()
    assert [r[0] for r in got] == names
    assert all(r[1] is None for r in got)
    assert got[0][2] is None and got[1][2] == frame["last_active"][1]


def test_an_unmigrated_database_is_a_fatal_error_with_a_hint(postgres_dsn: str, tmp_path: Path) -> None:
    publisher = _publisher(postgres_dsn, tmp_path)
    with pytest.raises(PublishError) as err:
        publisher.publish_members(members(2), run_at=T1)
    assert "memberpulse migrate" in str(err.value)
    assert not publisher.state.path.exists()


def test_a_role_without_grants_is_a_fatal_error(
    migrated_postgres_dsn: str, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    # authenticator can log in but holds no table privileges itself (NOINHERIT), as in Supabase.
    dsn = migrated_postgres_dsn.replace("postgres@", "authenticator:authenticator@")
    publisher = _publisher(dsn, tmp_path, sleep=sleeps)
    with pytest.raises(PublishError, match="permission denied"):
        publisher.publish_members(members(2), run_at=T1)
    assert sleeps.calls == []  # fatal: not retried
    assert not publisher.state.path.exists()


def test_target_down_raises_unavailable_after_bounded_retries_and_keeps_state(
    migrated_postgres_dsn: str, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    _publisher(migrated_postgres_dsn, tmp_path).publish_members(members(3), run_at=T1)
    state = PublishedState(tmp_path)
    before = state.path.read_bytes()
    down = f"postgresql://postgres:hunter2-secret@127.0.0.1:{free_port()}/postgres"
    publisher = _publisher(down, tmp_path, max_attempts=3, backoff_seconds=0.25, sleep=sleeps)
    with pytest.raises(PublishUnavailable) as err:
        publisher.publish_members(members(5), run_at=T2)
    assert sleeps.calls == [0.25, 0.5]  # 3 attempts, exponential backoff between them
    assert "after 3 attempts" in str(err.value)
    assert "hunter2-secret" not in str(err.value) and "hunter2-secret" not in repr(err.value)
    assert state.path.read_bytes() == before  # nothing marked published


def test_record_run_inserts_then_updates_one_row(migrated_postgres_dsn: str, tmp_path: Path) -> None:
    publisher = _publisher(migrated_postgres_dsn, tmp_path)
    publisher.record_run(PipelineRun(run_id="run-1", flow="reconcile", started_at=T1))
    result = PublishResult(inserted=3, updated=2, unchanged=7)
    publisher.record_run(
        PipelineRun(
            run_id="run-1",
            flow="reconcile",
            started_at=T1,
            finished_at=T2,
            status="completed",
            events_ingested=40,
            rejects=2,
            rows_inserted=result.inserted,
            rows_updated=result.updated,
            rows_unchanged=result.unchanged,
            drift_count=1,
            landing_rejections=3,
        )
    )
    with psycopg.connect(migrated_postgres_dsn) as conn:
        rows = conn.execute(
            "SELECT run_id, status, finished_at, events_ingested, rejects, rows_inserted, rows_updated,"
            " rows_unchanged, drift_count, error, landing_rejections FROM pipeline_runs"
        ).fetchall()
    assert rows == [("run-1", "completed", T2, 40, 2, 3, 2, 7, 1, None, 3)]


def test_record_failures_summarises_and_never_duplicates(migrated_postgres_dsn: str, tmp_path: Path) -> None:
    publisher = _publisher(migrated_postgres_dsn, tmp_path)
    frame = pl.DataFrame(
        {
            "webhook_id": ["wh_1", "wh_1", "wh_2"],
            "event_type": ["membership.went_valid", "membership.went_valid", None],
            "reason": ["unparseable body", "unparseable body", "unknown event"],
            "received_at": [T1, T2, T1],
            "body_prefix": ["{not json", "{not json", '{"type":"x"}'],
        },
        schema_overrides={"received_at": pl.Datetime("us", "UTC")},
    )
    assert publisher.record_failures(frame) == 2
    later = frame.with_columns(received_at=pl.lit(T3).cast(pl.Datetime("us", "UTC")))
    assert publisher.record_failures(later) == 2  # a re-run: same keys, last_seen moves, no new rows
    with psycopg.connect(migrated_postgres_dsn) as conn:
        rows = conn.execute(
            "SELECT webhook_id, reason, event_type, first_seen, last_seen FROM webhook_failures ORDER BY 1"
        ).fetchall()
    assert rows == [
        ("wh_1", "unparseable body", "membership.went_valid", T1, T3),
        ("wh_2", "unknown event", None, T1, T3),
    ]


def test_get_publisher_picks_the_configured_target(tmp_path: Path) -> None:
    def settings(**env: str) -> Settings:
        values: dict[str, Any] = {"_env_file": None, "MEMBERPULSE_DATA_DIR": str(tmp_path), **env}
        return Settings(**values)

    assert get_publisher(settings()) is None
    pg = get_publisher(settings(SUPABASE_DB_URL="postgresql://postgres:pw@127.0.0.1:5/x"))
    assert isinstance(pg, PostgresPublisher) and "pw" not in pg.describe()
    rest = get_publisher(settings(SUPABASE_URL="http://127.0.0.1:9", SUPABASE_SERVICE_ROLE_KEY="k"))
    assert isinstance(rest, PostgrestPublisher)
    rest.close()
    # Each target keeps its own published state, named without the password.
    targets = tmp_path / "warehouse" / "published" / "targets"
    assert pg.state.path.parent.parent == targets and "pw" not in str(pg.state.path)
    assert rest.state.path.parent.parent == targets and rest.state.path != pg.state.path
    same_db_other_password = get_publisher(settings(SUPABASE_DB_URL="postgresql://postgres:other@127.0.0.1:5/x"))
    assert same_db_other_password is not None and same_db_other_password.state.path == pg.state.path
