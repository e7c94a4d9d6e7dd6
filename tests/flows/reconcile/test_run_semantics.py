"""What a run may touch: a backdated ``--as-of`` never overwrites the present, ``--dry-run`` changes no file,
and a publish outage still leaves the analysts a fresh snapshot (real PostgreSQL, stopped and started)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import psycopg
import pytest

from memberpulse.cli.run import run_once
from memberpulse.contracts.times import file_time
from memberpulse.flows.publish import apply_migrations
from memberpulse.flows.reconcile import RunReport, reconcile_flow
from memberpulse.landing import mock_events as mock
from tests.support.postgres import PostgresServer, start_server
from tests.support.reconcile_testkit import AS_OF, append_raw, make_settings, member, raw_record, scenario

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones included) → sha256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _live_rows(dsn: str, table: str = "member_activity", order: str = "membership_id") -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as con:
        return con.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()


def _snapshot_table(path: Path | str, table: str) -> pl.DataFrame:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.sql(f"SELECT * FROM {table}").pl()


def test_backdated_run_leaves_the_present_alone(tmp_path: Path, migrated_postgres_dsn: str) -> None:
    settings = make_settings(tmp_path, SUPABASE_DB_URL=migrated_postgres_dsn)
    append_raw(tmp_path, scenario())
    present = reconcile_flow(as_of=AS_OF, settings=settings)
    assert present["mode"] == "run"
    live = _live_rows(migrated_postgres_dsn)
    runs = _live_rows(migrated_postgres_dsn, "pipeline_runs", "started_at")
    latest = settings.snapshots_dir / "latest.duckdb"
    latest_bytes = latest.read_bytes()
    manifest = (settings.warehouse_dir / "reconcile" / "manifest.json").read_bytes()

    earlier = AS_OF - timedelta(days=4)  # m4 still valid then: the backdated view differs from the present
    back = reconcile_flow(as_of=earlier, settings=settings)

    assert back["mode"] == "backdated" and back["status"] == "completed"
    assert _live_rows(migrated_postgres_dsn) == live  # the live rows are unchanged ...
    assert _live_rows(migrated_postgres_dsn, "pipeline_runs", "started_at") == runs  # ... and no run recorded
    assert latest.read_bytes() == latest_bytes
    assert (settings.warehouse_dir / "reconcile" / "manifest.json").read_bytes() == manifest
    expected = settings.snapshots_dir / "as-of" / f"{file_time(earlier)}.duckdb"
    assert Path(back["snapshot_path"]) == expected and expected.is_file()
    past = {r["membership_id"]: r["status"] for r in _snapshot_table(expected, "member_activity").to_dicts()}
    now = {r["membership_id"]: r["status"] for r in _snapshot_table(latest, "member_activity").to_dicts()}
    assert (past["mem_0004"], now["mem_0004"]) == ("at_risk", "inactive")
    summary = dict(RunReport.from_dict(back).summary_rows())
    assert "earlier than the last run's" in summary["published to"]
    assert str(expected) in summary["snapshot"] and "latest.duckdb unchanged" in summary["snapshot"]

    # A later as-of is the present again: it commits and publishes as usual.
    later = reconcile_flow(as_of=AS_OF + timedelta(days=1), settings=settings)
    assert later["mode"] == "run" and later["updated"] > 0
    assert latest.read_bytes() != latest_bytes


def test_dry_run_counts_what_it_would_publish_and_changes_no_file(tmp_path: Path, migrated_postgres_dsn: str) -> None:
    settings = make_settings(tmp_path, SUPABASE_DB_URL=migrated_postgres_dsn)
    append_raw(tmp_path, scenario())
    reconcile_flow(as_of=AS_OF, settings=settings)
    m5 = member(5)
    append_raw(tmp_path, [raw_record(mock.went_valid(m5, created_at=AS_OF - timedelta(days=1)))], day="2026-11-28")
    before, live = _tree_digest(tmp_path), _live_rows(migrated_postgres_dsn)

    dry = reconcile_flow(as_of=AS_OF, settings=settings, dry_run=True)

    assert dry["mode"] == "dry-run" and dry["events_ingested"] == 1
    assert (dry["inserted"], dry["updated"], dry["unchanged"]) == (1, 0, 4)
    assert dry["snapshot_path"] is None
    assert _tree_digest(tmp_path) == before
    assert _live_rows(migrated_postgres_dsn) == live
    summary = dict(RunReport.from_dict(dry).summary_rows())
    assert summary["rows it would insert / update / leave unchanged"] == "1 / 0 / 4"

    real = reconcile_flow(as_of=AS_OF, settings=settings)  # the dry run left the new event for the real one
    assert (real["events_ingested"], real["inserted"]) == (1, 1)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own, so stopping it disturbs no other test."""
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


def test_publish_outage_still_writes_the_snapshot_and_the_next_run_catches_up(
    tmp_path: Path, own_postgres: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = own_postgres.dsn(own_postgres.create_database())
    apply_migrations(dsn)
    settings = make_settings(
        tmp_path, SUPABASE_DB_URL=dsn, MEMBERPULSE_PUBLISH_MAX_ATTEMPTS=1, MEMBERPULSE_PUBLISH_TIMEOUT_SECONDS=2
    )
    append_raw(tmp_path, scenario())
    own_postgres.halt()

    assert run_once(settings, as_of=AS_OF, full_refresh=False) == 3

    err = capsys.readouterr().err
    assert "Traceback" not in err and "Task run" not in err
    lines = err.strip().splitlines()
    assert len(lines) <= 4, err
    assert lines[0].startswith("memberpulse run: publish failed") and "what to do:" in lines[-1]
    assert sum("Connection refused" in line or "connection failed" in line for line in lines) == 1, err
    fresh = _snapshot_table(settings.snapshots_dir / "latest.duckdb", "member_activity")
    assert fresh.height == 4
    run_row = _snapshot_table(settings.snapshots_dir / "latest.duckdb", "pipeline_runs").to_dicts()[-1]
    assert run_row["status"] == "failed" and run_row["error"].startswith("publish failed")

    own_postgres.resume()
    caught_up = reconcile_flow(as_of=AS_OF, settings=settings)

    assert (caught_up["status"], caught_up["inserted"]) == ("completed", 4)
    assert len(_live_rows(dsn)) == 4
