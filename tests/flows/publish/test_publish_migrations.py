"""supabase/migrations against a real PostgreSQL server: idempotent, the guide's check query, RLS, the CLI."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from memberpulse import cli
from memberpulse.contracts.tables import PUBLISHED_TABLES
from memberpulse.errors import ConfigError, ExitCode, InvalidInput
from memberpulse.flows.publish import PostgresPublisher, PublishedState
from memberpulse.flows.publish._migrations import applied_versions, apply_migrations, list_migrations, migrate
from memberpulse.settings import Settings
from tests.support.publish_data import T0, members

pytestmark = pytest.mark.slow  # the real PostgreSQL server

REPO = Path(__file__).resolve().parents[3]
TABLES = ("member_activity", "webhook_failures", "pipeline_runs")
SEED_QUERY = """SELECT member_name, status, activity_score, last_active, updated_at
FROM member_activity
ORDER BY updated_at DESC
LIMIT 10;"""


def test_migration_files_follow_the_supabase_cli_naming_and_are_packaged_once() -> None:
    found = list_migrations()
    assert [m.filename for m in found] == sorted(p.name for p in (REPO / "supabase" / "migrations").glob("*.sql"))
    assert [m.name for m in found][:3] == ["member_activity", "webhook_failures", "pipeline_runs"]
    assert {m.name for m in found[3:]} == {"column_comments"}  # generated: scripts/data_dictionary.py
    # The package reaches the SQL through a symlink: one source of truth, nothing to keep in sync.
    packaged = REPO / "flows" / "publish" / "sql"
    assert packaged.is_symlink() and packaged.resolve() == (REPO / "supabase" / "migrations").resolve()


def test_a_misnamed_migration_is_refused(tmp_path: Path) -> None:
    (tmp_path / "init.sql").write_text("SELECT 1;")
    with pytest.raises(InvalidInput, match="Supabase CLI naming"):
        list_migrations(tmp_path)


def test_applying_twice_is_harmless_and_recorded(postgres_dsn: str) -> None:
    first = apply_migrations(postgres_dsn)
    assert first == [m.filename for m in list_migrations()]
    assert apply_migrations(postgres_dsn) == []
    assert applied_versions(postgres_dsn) == [m.version for m in list_migrations()]
    # Even without the history table the SQL itself is idempotent (IF NOT EXISTS, guarded DO blocks).
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        for migration in list_migrations():
            conn.execute(migration.read().encode())
        tables = conn.execute(
            "SELECT tablename, rowsecurity FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        ).fetchall()
        policies = conn.execute("SELECT count(*) FROM pg_policies WHERE schemaname = 'public'").fetchone()
    assert tables == [(t, True) for t in sorted(TABLES)]
    assert policies == (3,)  # one service_role policy per table, not one per application


def test_the_guides_check_query_runs_verbatim(migrated_postgres_dsn: str, tmp_path: Path) -> None:
    frame = members(12)
    frame = frame.with_columns(engagement_score=frame["total_sessions"] * 10)
    PostgresPublisher(migrated_postgres_dsn, state=PublishedState(tmp_path)).publish_members(frame, run_at=T0)
    with psycopg.connect(migrated_postgres_dsn) as conn:
        rows = conn.execute(SEED_QUERY).fetchall()
        scores = conn.execute("SELECT engagement_score, activity_score FROM member_activity").fetchall()
    assert len(rows) == 10
    assert [r[4] for r in rows] == [T0] * 10
    assert all(e == a for e, a in scores)  # activity_score is generated from engagement_score


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("status", "'churned'", "member_activity_status_check"),
        ("engagement_score", "101", "member_activity_engagement_score_check"),
        ("engagement_score", "-1", "member_activity_engagement_score_check"),
    ],
)
def test_checks_refuse_bad_status_and_scores(
    migrated_postgres_dsn: str, column: str, value: str, constraint: str
) -> None:
    values = {"status": "'active'", "engagement_score": "50", column: value}
    statement = (
        "INSERT INTO member_activity (membership_id, status, engagement_score, valid)"
        f" VALUES ('mem_x', {values['status']}, {values['engagement_score']}, true)"
    )
    with psycopg.connect(migrated_postgres_dsn) as conn, pytest.raises(psycopg.errors.CheckViolation) as err:
        conn.execute(statement.encode())
    assert err.value.diag.constraint_name == constraint


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_rls_and_grants_deny_the_browser_roles(migrated_postgres_dsn: str, role: str, table: str) -> None:
    with psycopg.connect(migrated_postgres_dsn) as conn:
        conn.execute(f"SET ROLE {role}".encode())
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT * FROM {table}".encode())


def test_rls_hides_rows_from_a_role_granted_select_but_given_no_policy(migrated_postgres_dsn: str) -> None:
    with psycopg.connect(migrated_postgres_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO member_activity (membership_id, status, engagement_score, valid)"
            " VALUES ('mem_1', 'active', 90, true)"
        )
        conn.execute("DO $$ BEGIN CREATE ROLE reporting NOLOGIN; EXCEPTION WHEN duplicate_object THEN END $$")
        conn.execute("GRANT SELECT ON member_activity TO reporting")
        conn.execute("SET ROLE reporting")
        assert conn.execute("SELECT count(*) FROM member_activity").fetchone() == (0,)
        conn.execute("RESET ROLE")
        conn.execute("REVOKE SELECT ON member_activity FROM reporting")


def test_service_role_reads_and_writes(migrated_postgres_dsn: str) -> None:
    with psycopg.connect(migrated_postgres_dsn) as conn:
        conn.execute("SET ROLE service_role")
        conn.execute(
            "INSERT INTO member_activity (membership_id, status, engagement_score, valid)"
            " VALUES ('mem_1', 'at_risk', 40, true)"
        )
        conn.execute(
            "INSERT INTO pipeline_runs (run_id, flow, started_at, status) VALUES ('r1', 'x', now(), 'running')"
        )
        assert conn.execute("SELECT status, activity_score FROM member_activity").fetchall() == [("at_risk", 40)]
        assert conn.execute("SELECT count(*) FROM pipeline_runs").fetchone() == (1,)


def test_migrate_cli_needs_the_db_url() -> None:
    with pytest.raises(ConfigError) as err:
        migrate(Settings(_env_file=None))  # type: ignore[call-arg]
    assert err.value.variable == "SUPABASE_DB_URL"
    assert "SUPABASE_DB_URL" in str(err.value)


def test_memberpulse_migrate_applies_and_never_prints_the_password(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # trust auth ignores the password; it is here to prove it never reaches the output
    dsn = postgres_dsn.replace("postgres@", "postgres:hunter2-secret@")
    monkeypatch.setenv("SUPABASE_DB_URL", dsn)
    assert cli.main(["migrate"]) == 0
    first = capsys.readouterr()
    assert cli.main(["migrate"]) == 0
    second = capsys.readouterr()
    assert [line for line in first.out.splitlines() if line.startswith("applied ")] == [
        f"applied {m.filename}" for m in list_migrations()
    ]
    assert "schema up to date" in second.out
    for text in (first.out, first.err, second.out, second.err):
        assert "hunter2-secret" not in text
    assert "postgres@127.0.0.1" in first.out


def test_memberpulse_migrate_with_the_database_down_exits_transient(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.postgres import free_port

    monkeypatch.setenv("SUPABASE_DB_URL", f"postgresql://postgres:hunter2-secret@127.0.0.1:{free_port()}/postgres")
    assert cli.main(["migrate"]) == ExitCode.TRANSIENT
    err = capsys.readouterr().err
    assert "hunter2-secret" not in err and "applying migrations" in err


def test_every_published_table_and_column_carries_its_description(migrated_postgres_dsn: str) -> None:
    with psycopg.connect(migrated_postgres_dsn) as conn:
        for table in PUBLISHED_TABLES:
            oid = f"public.{table.name}"
            got = conn.execute("SELECT obj_description(%s::regclass, 'pg_class')", (oid,)).fetchone()
            assert got == (table.description,), table.name
            rows = conn.execute(
                "SELECT attname, col_description(attrelid, attnum) FROM pg_attribute"
                " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (oid,),
            ).fetchall()
            assert dict(rows) == {c.name: c.description for c in table.columns}, table.name
