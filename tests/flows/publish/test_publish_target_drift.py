"""A target changed behind memberpulse's back (rows truncated, deleted or edited by someone else) is noticed by
the next run with one cheap query and made equal to the published state again; ``--full-refresh`` always
rewrites it. Real runs against a real PostgreSQL, directly and through the PostgREST stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest

from memberpulse.cli.run import run_once
from memberpulse.flows.fsio import file_version
from memberpulse.flows.publish import PostgresPublisher, apply_migrations, publish_state
from memberpulse.flows.publish._fingerprint import Fingerprint, fingerprint_rows
from memberpulse.flows.publish._schema import MEMBER_ACTIVITY_COLUMNS
from memberpulse.flows.publish._targets import TargetState
from memberpulse.settings import Settings
from tests.support.cli_run import memberpulse_run
from tests.support.postgres import PostgresServer, PostgresUnavailable, start_server
from tests.support.postgrest_standin import PostgrestStandIn, run_postgrest_standin
from tests.support.publish_data import T0, members
from tests.support.reconcile_testkit import AS_OF, append_raw, crowd, make_settings

pytestmark = pytest.mark.slow  # real PostgreSQL

MEMBERS = 304
SERVICE_KEY = "test-service-role-key"
TAMPERING = {
    "truncated": "TRUNCATE member_activity",
    "rows deleted": "DELETE FROM member_activity WHERE membership_id IN ('mem_0007', 'mem_0100', 'mem_0250')",
    "a status edited": "UPDATE member_activity SET status = 'inactive' WHERE membership_id = 'mem_0042'",
}
_SELECT = f"SELECT {', '.join(MEMBER_ACTIVITY_COLUMNS)} FROM member_activity ORDER BY membership_id"


def _target(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(_SELECT).fetchall()


def _published(settings: Settings) -> list[tuple[Any, ...]]:
    frame = publish_state(settings).members.load()
    assert frame is not None
    return frame.select(MEMBER_ACTIVITY_COLUMNS).sort("membership_id").rows()


def _tamper(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(statement)


def _published_run(settings: Settings, dsn: str) -> list[tuple[Any, ...]]:
    """A first run that publishes every member; the rows as published."""
    append_raw(settings.data_dir, crowd(MEMBERS))
    assert run_once(settings, as_of=AS_OF, full_refresh=False) == 0
    published = _published(settings)
    assert len(published) == MEMBERS and _target(dsn) == published
    return published


@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=list(TAMPERING))
def test_a_target_changed_behind_our_back_is_made_equal_to_the_published_state_by_the_next_run(
    tmp_path: Path, migrated_postgres_dsn: str, tamper: str
) -> None:
    settings = make_settings(tmp_path, SUPABASE_DB_URL=migrated_postgres_dsn)
    published = _published_run(settings, migrated_postgres_dsn)
    _tamper(migrated_postgres_dsn, tamper)

    repaired = memberpulse_run(tmp_path, {"SUPABASE_DB_URL": migrated_postgres_dsn}, "--as-of", AS_OF.isoformat())

    assert repaired.code == 0, repaired.stderr
    assert _target(migrated_postgres_dsn) == published  # every column, updated_at included
    assert _published(settings) == published
    # The person running it is told, and the target's state keeps it.
    assert f"published state {MEMBERS}" in repaired.stderr and "re-published all" in repaired.stderr
    said_by_run = [line for line in repaired.stderr.splitlines() if line.startswith("memberpulse run: warning:")]
    assert any("re-published all" in line for line in said_by_run), repaired.stderr  # the run's report says it
    said = publish_state(settings).load_meta().repaired
    assert said is not None and f"published state {MEMBERS}" in said and "re-published all" in said

    again = memberpulse_run(tmp_path, {"SUPABASE_DB_URL": migrated_postgres_dsn}, "--as-of", AS_OF.isoformat())
    assert again.code == 0 and "re-published" not in again.stderr, again.stderr  # repaired once: agrees now


def test_a_full_refresh_rewrites_the_target(tmp_path: Path, migrated_postgres_dsn: str) -> None:
    settings = make_settings(tmp_path, SUPABASE_DB_URL=migrated_postgres_dsn)
    published = _published_run(settings, migrated_postgres_dsn)
    _tamper(migrated_postgres_dsn, TAMPERING["truncated"])

    assert run_once(settings, as_of=AS_OF, full_refresh=True) == 0

    assert _target(migrated_postgres_dsn) == published == _published(settings)


def test_rows_someone_else_added_are_left_alone_and_do_not_trigger_a_republish_every_run(
    tmp_path: Path, migrated_postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, SUPABASE_DB_URL=migrated_postgres_dsn)
    published = _published_run(settings, migrated_postgres_dsn)
    _tamper(
        migrated_postgres_dsn,
        "INSERT INTO member_activity (membership_id, status, engagement_score, valid)"
        " VALUES ('mem_not_ours', 'active', 10, true)",
    )
    theirs = [row for row in _target(migrated_postgres_dsn) if row[0] == "mem_not_ours"]
    caplog.clear()

    assert run_once(settings, as_of=AS_OF, full_refresh=False) == 0  # notices, re-sends, keeps their row
    assert "re-published all" in caplog.text
    assert "1 row(s) in member_activity were not published from here" in caplog.text, caplog.text
    assert sorted(published + theirs) == _target(migrated_postgres_dsn)

    caplog.clear()
    assert run_once(settings, as_of=AS_OF, full_refresh=False) == 0  # and from then on agrees
    assert "re-published" not in caplog.text


@pytest.fixture
def counted_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own that counts every statement it runs (pg_stat_statements)."""
    try:
        server = start_server(settings={"shared_preload_libraries": "pg_stat_statements"})
    except PostgresUnavailable as exc:  # the pgserver wheel's build has no contrib modules
        pytest.skip(f"pg_stat_statements is not available here: {exc}")
    try:
        yield server
    finally:
        server.stop()


def _statements_on_member_activity(dsn: str) -> list[tuple[str, int]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT query, calls FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND query ILIKE '%member_activity%' AND query NOT ILIKE '%pg_stat_statements%'"
        ).fetchall()


def test_a_run_with_nothing_changed_sends_only_the_one_cheap_check(
    tmp_path: Path, counted_postgres: PostgresServer
) -> None:
    dsn = counted_postgres.dsn(counted_postgres.create_database())
    apply_migrations(dsn)
    _tamper(dsn, "CREATE EXTENSION pg_stat_statements")
    settings = make_settings(tmp_path, SUPABASE_DB_URL=dsn)
    _published_run(settings, dsn)
    _tamper(dsn, "SELECT pg_stat_statements_reset()")

    assert run_once(settings, as_of=AS_OF, full_refresh=False) == 0

    statements = _statements_on_member_activity(dsn)
    assert len(statements) == 1, statements  # one statement, run once: no COPY, no upsert
    query, calls = statements[0]
    assert calls == 1 and query.startswith("SELECT count(*)"), query


# --- PostgREST: the check is a row count through the API ------------------------------------------------------


@pytest.fixture
def standin(migrated_postgres_dsn: str, postgres_server: PostgresServer) -> Iterator[PostgrestStandIn]:
    dbname = migrated_postgres_dsn.rsplit("/", 1)[1]
    dsn = postgres_server.dsn(dbname, user="authenticator", password="authenticator")
    with run_postgrest_standin(dsn, keys={SERVICE_KEY: "service_role"}) as server:
        yield server


def test_through_postgrest_missing_rows_are_noticed_by_a_count_and_an_edit_by_a_full_refresh(
    tmp_path: Path, migrated_postgres_dsn: str, standin: PostgrestStandIn
) -> None:
    settings = make_settings(tmp_path, SUPABASE_URL=standin.url, SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY)
    published = _published_run(settings, migrated_postgres_dsn)

    standin.requests.clear()
    assert run_once(settings, as_of=AS_OF, full_refresh=False) == 0  # nothing changed: one HEAD, a count
    member_requests = [r for r in standin.requests if r.path.endswith("/member_activity")]
    assert [(r.method, r.headers.get("prefer")) for r in member_requests] == [("HEAD", "count=exact")]

    _tamper(migrated_postgres_dsn, TAMPERING["rows deleted"])
    assert run_once(settings, as_of=AS_OF, full_refresh=False) == 0
    assert _target(migrated_postgres_dsn) == published

    # An edit in place keeps the count: the API offers no digest, so only a full refresh repairs it.
    _tamper(migrated_postgres_dsn, TAMPERING["a status edited"])
    assert run_once(settings, as_of=AS_OF, full_refresh=False) == 0
    assert _target(migrated_postgres_dsn) != published
    assert run_once(settings, as_of=AS_OF, full_refresh=True) == 0
    assert _target(migrated_postgres_dsn) == published


def test_the_remembered_digest_follows_every_incremental_publish(migrated_postgres_dsn: str, tmp_path: Path) -> None:
    """A run pays for the rows it changed: the published state's digest is updated by them, not recomputed, and
    must stay the digest of the whole state (or the next check would take the target for changed)."""
    state = TargetState(tmp_path, "postgres-digest")
    publisher = PostgresPublisher(migrated_postgres_dsn, state=state.members)
    publisher.target_state = state  # as get_publisher makes it
    frame = members(20)
    publisher.publish_members(frame, run_at=T0)
    for step in range(1, 4):
        moved = pl.col("total_sessions") == step
        frame = pl.concat(
            [frame.with_columns(engagement_score=pl.when(moved).then(step * 10).otherwise("engagement_score")),
             members(2, start=20 + 2 * step)],
            how="vertical_relaxed",
        )  # fmt: skip
        result = publisher.publish_members(frame, run_at=T0 + timedelta(hours=step))
        assert (result.inserted, result.repaired) == (2, None) and result.updated > 0
        meta, published = state.load_meta(), state.members.load()
        assert published is not None and meta.published_version == file_version(state.members.path)
        assert Fingerprint(published.height, meta.published_digest) == fingerprint_rows(published)
    assert _target(migrated_postgres_dsn) == sorted(published.select(MEMBER_ACTIVITY_COLUMNS).rows())
