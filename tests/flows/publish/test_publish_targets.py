"""Published state per target: a target configured late, or a different target, receives everything —
every member row and every webhook_failures record — through the real reconcile flow, real PostgreSQL and
the PostgREST STAND-IN (tests/support/postgrest_standin.py; the real PostgREST cannot be installed here)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from memberpulse.contracts.quarantine import encode_quarantine_entry, quarantine_path
from memberpulse.flows.reconcile import reconcile_flow
from memberpulse.landing import mock_events as mock
from memberpulse.settings import Settings
from tests.support.postgres import PostgresServer
from tests.support.postgrest_standin import PostgrestStandIn, run_postgrest_standin
from tests.support.reconcile_testkit import AS_OF, append_raw, make_settings, member, raw_record, scenario

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
SERVICE_KEY = "test-service-role-key"


def _refuse_one(settings: Settings, webhook_id: str) -> None:
    """A quarantine line as the landing writes it for a refused webhook (bad signature)."""
    path = quarantine_path(settings.quarantine_dir, "test-writer")
    path.parent.mkdir(parents=True, exist_ok=True)
    line = encode_quarantine_entry(
        received_at=AS_OF, status=401, reason="bad signature", remote="127.0.0.1",
        headers={"webhook-id": webhook_id}, body_bytes=2, body_prefix=b"{}",
    )  # fmt: skip
    with open(path, "ab") as fh:
        fh.write(line)


def _rows(dsn: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with psycopg.connect(dsn) as con:
        members = con.execute("SELECT membership_id, status, engagement_score FROM member_activity ORDER BY 1")
        failures = con.execute("SELECT webhook_id, reason FROM webhook_failures ORDER BY 1, 2")
        return members.fetchall(), failures.fetchall()


def _history(tmp_path: Path) -> Settings:
    """Three runs with no target: members scored, one refused webhook and one unreadable record counted."""
    settings = make_settings(tmp_path)
    append_raw(tmp_path, scenario())
    _refuse_one(settings, "msg_refused_1")
    reconcile_flow(as_of=AS_OF, settings=settings)
    append_raw(tmp_path, [raw_record("{not json", webhook_id="msg_broken_1")])
    reconcile_flow(as_of=AS_OF + timedelta(hours=1), settings=settings)
    reconcile_flow(as_of=AS_OF + timedelta(hours=2), settings=settings)
    return settings


@pytest.fixture
def second_db(postgres_server: PostgresServer, _migrated_template: str) -> Iterator[str]:
    name = postgres_server.create_database(template=_migrated_template)
    try:
        yield postgres_server.dsn(name)
    finally:
        postgres_server.drop_database(name)


def test_a_target_configured_after_runs_gets_every_row_and_every_failure(
    tmp_path: Path, migrated_postgres_dsn: str
) -> None:
    _history(tmp_path)
    late = make_settings(tmp_path, SUPABASE_DB_URL=migrated_postgres_dsn)
    report = reconcile_flow(as_of=AS_OF + timedelta(hours=3), settings=late)
    assert report["inserted"] == 4
    members, failures = _rows(migrated_postgres_dsn)
    assert [m[0] for m in members] == ["mem_0001", "mem_0002", "mem_0003", "mem_0004"]
    assert {f[0] for f in failures} == {"msg_refused_1", "msg_broken_1"}
    # Sent once: the next run has nothing new for it.
    again = reconcile_flow(as_of=AS_OF + timedelta(hours=3), settings=late)
    assert (again["inserted"], again["updated"]) == (0, 0)
    assert _rows(migrated_postgres_dsn)[1] == failures


def test_switching_targets_sends_everything_to_the_new_one(
    tmp_path: Path, migrated_postgres_dsn: str, second_db: str, postgres_server: PostgresServer
) -> None:
    _history(tmp_path)
    first = make_settings(tmp_path, SUPABASE_DB_URL=migrated_postgres_dsn)
    reconcile_flow(as_of=AS_OF + timedelta(hours=3), settings=first)
    # New facts while the first target is in use, then the switch to PostgREST over another database.
    late = AS_OF + timedelta(hours=3)  # received when it happened: a webhook is never dated after its arrival
    append_raw(tmp_path, [raw_record(mock.accessed(member(3), accessed_at=late), received_at=late)])
    _refuse_one(first, "msg_refused_2")
    reconcile_flow(as_of=AS_OF + timedelta(hours=4), settings=first)
    expected = _rows(migrated_postgres_dsn)
    assert {f[0] for f in expected[1]} == {"msg_refused_1", "msg_refused_2", "msg_broken_1"}

    dbname = second_db.rsplit("/", 1)[1]
    auth_dsn = postgres_server.dsn(dbname, user="authenticator", password="authenticator")
    standin: PostgrestStandIn
    with run_postgrest_standin(auth_dsn, keys={SERVICE_KEY: "service_role"}) as standin:
        switched = make_settings(tmp_path, SUPABASE_URL=standin.url, SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY)
        report = reconcile_flow(as_of=AS_OF + timedelta(hours=4), settings=switched)
    assert report["inserted"] == 4
    assert _rows(second_db) == expected
    # And back: the first target already holds all of it, so nothing is re-sent.
    back = reconcile_flow(as_of=AS_OF + timedelta(hours=4), settings=first)
    assert (back["inserted"], back["updated"]) == (0, 0)
