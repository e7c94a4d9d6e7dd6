"""Crash safety: a reconcile run SIGKILLed at each step, then run again, leaves exactly what one uninterrupted
run leaves — in Postgres and in the DuckDB snapshot — with nothing lost and nothing counted twice."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import psycopg
import pytest
from polars.testing import assert_frame_equal

from memberpulse.contracts.raw_record import raw_archive_dir
from memberpulse.flows.reconcile import reconcile_flow
from memberpulse.testing.kill_points import FAULT_ENV, KILL_POINTS
from tests.support.postgres import PostgresServer
from tests.support.reconcile_testkit import AS_OF, COMPARED, append_raw, make_settings, scenario, snapshot_members

pytestmark = pytest.mark.slow  # Prefect, PostgreSQL and killed child processes


def _published(dsn: str) -> pl.DataFrame:
    with psycopg.connect(dsn) as con:
        frame = pl.read_database(f"SELECT {', '.join(COMPARED)} FROM member_activity", con)
    return frame.sort("membership_id")


def _statuses_recorded(dsn: str, data_dir: Path) -> set[str]:
    """Every status any record gives a reconcile run: Postgres' pipeline_runs and the warehouse's run log."""
    with psycopg.connect(dsn) as con:
        statuses = {row[0] for row in con.execute("SELECT status FROM pipeline_runs").fetchall()}
    run_log = data_dir / "warehouse" / "published" / "pipeline_runs.parquet"
    if run_log.exists():
        statuses |= set(pl.read_parquet(run_log)["status"].to_list())
    return statuses


@pytest.fixture(scope="session")
def cli_prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PREFECT_HOME for the CLI runs: Prefect migrates its SQLite database once, not once per run."""
    return tmp_path_factory.mktemp("prefect-home")


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_run_then_rerun_equals_uninterrupted_run(
    point: str,
    tmp_path: Path,
    postgres_server: PostgresServer,
    _migrated_template: str,
    migrated_postgres_dsn: str,
    cli_prefect_home: Path,
) -> None:
    reference_dsn = postgres_server.dsn(postgres_server.create_database(template=_migrated_template))
    reference = make_settings(tmp_path / "reference", SUPABASE_DB_URL=reference_dsn)
    append_raw(reference.data_dir, scenario())
    reconcile_flow(as_of=AS_OF, settings=reference)

    data_dir = tmp_path / "crashed"
    append_raw(data_dir, scenario())
    env = {
        **os.environ,
        "MEMBERPULSE_DATA_DIR": str(data_dir),
        "SUPABASE_DB_URL": migrated_postgres_dsn,
        FAULT_ENV: point,
        "MEMBERPULSE_RAW_RETENTION_DAYS": "0",  # so the run reaches its raw-history compaction too
        "PREFECT_HOME": str(cli_prefect_home),
    }
    env.pop("PREFECT_API_URL", None)  # the killed run uses Prefect's ephemeral mode, like the CLI does
    log = tmp_path / "killed-run.log"
    with open(log, "wb") as out:
        # Its own session, so the ephemeral Prefect server it starts can be stopped with it afterwards.
        killed = subprocess.Popen(
            [sys.executable, "-m", "memberpulse.testing.kill_points", "run", "--as-of", AS_OF.isoformat()],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            returncode = killed.wait(timeout=240)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(killed.pid, signal.SIGKILL)
    assert returncode == -signal.SIGKILL, log.read_text()[-3000:]
    if point == "archive_before_unlink":
        # Compaction is housekeeping after every output was written and the run recorded: it completed.
        assert _statuses_recorded(migrated_postgres_dsn, data_dir) == {"completed"}
        assert (data_dir / "snapshots" / "latest.duckdb").exists()
    else:
        # A run is completed only when all its outputs are: killed before the snapshot swap (or earlier), no
        # record anywhere says it completed.
        assert "completed" not in _statuses_recorded(migrated_postgres_dsn, data_dir)
        assert not (data_dir / "snapshots" / "latest.duckdb").exists()

    settings = make_settings(data_dir, SUPABASE_DB_URL=migrated_postgres_dsn, MEMBERPULSE_RAW_RETENTION_DAYS=0)
    segments = list(settings.landing_dir.rglob("*.ndjson"))
    if point == "archive_before_unlink":  # killed with the archive written and the NDJSON still there
        assert segments and list(raw_archive_dir(settings.landing_dir).glob("*.parquet"))
    rerun = reconcile_flow(as_of=AS_OF, settings=settings)
    assert rerun["status"] == "completed"
    assert not list(settings.landing_dir.rglob("*.ndjson"))  # compacted by the rerun at the latest
    assert reconcile_flow(as_of=AS_OF, full_refresh=True, settings=settings)["records_read"] == len(scenario())

    assert_frame_equal(snapshot_members(settings), snapshot_members(reference))
    assert_frame_equal(_published(migrated_postgres_dsn), _published(reference_dsn))
    with duckdb.connect(str(settings.snapshots_dir / "latest.duckdb"), read_only=True) as con:
        events = con.execute("SELECT count(*), count(DISTINCT webhook_id) FROM events").fetchone()
    assert events == (len(scenario()), len(scenario()))
