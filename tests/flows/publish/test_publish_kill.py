"""All or nothing: a publisher SIGKILLed between COPY and commit leaves the table exactly as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
import psycopg
import pytest

from memberpulse.flows.publish import PostgresPublisher, PublishedState
from tests.support.publish_data import T0, members, read_members

pytestmark = pytest.mark.slow  # the real PostgreSQL server and a killed child process

ROOT = Path(__file__).resolve().parents[3]
T1, T2, T3 = T0 + timedelta(hours=1), T0 + timedelta(hours=2), T0 + timedelta(hours=3)

# The child publishes with a hook that runs inside the open transaction, right after COPY: it says so
# through a marker file and then waits to be killed.
CHILD = textwrap.dedent(
    """
    import sys, time
    from datetime import datetime
    from pathlib import Path
    import polars as pl
    from memberpulse.flows.publish import PostgresPublisher, PublishedState

    dsn, warehouse, rows, marker, run_at = sys.argv[1:]

    def pause_after_copy() -> None:
        Path(marker).write_text("copied")
        time.sleep(120)

    publisher = PostgresPublisher(dsn, state=PublishedState(Path(warehouse)), after_copy=pause_after_copy)
    publisher.publish_members(pl.read_parquet(rows), run_at=datetime.fromisoformat(run_at))
    """
)


def _open_publish_transactions(dsn: str) -> list[tuple[str, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT state FROM pg_stat_activity WHERE application_name = 'memberpulse-publish'"
        ).fetchall()


def test_kill_between_copy_and_commit_changes_nothing_and_the_next_run_sends_all_pending(
    migrated_postgres_dsn: str, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse"
    state = PublishedState(warehouse)
    PostgresPublisher(migrated_postgres_dsn, state=state).publish_members(members(50), run_at=T1)
    table_before = read_members(migrated_postgres_dsn)
    state_before = state.path.read_bytes()

    # 7 changed rows and 5 new ones are pending.
    changed = members(50).with_columns(
        engagement_score=pl.when(pl.col("total_sessions") == 3).then(pl.lit(7, pl.Int32)).otherwise(50)
    )
    pending = pl.concat([changed, members(5, start=50)], how="vertical_relaxed")
    assert changed.filter(pl.col("engagement_score") == 7).height == 7
    rows_file, marker = tmp_path / "rows.parquet", tmp_path / "copied"
    pending.write_parquet(rows_file)

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, migrated_postgres_dsn, str(warehouse), str(rows_file), str(marker),
         T2.isoformat()],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "the child never reached the end of COPY"
            time.sleep(0.02)
        # The transaction with the COPYed rows is open on the server right now.
        assert _open_publish_transactions(migrated_postgres_dsn) == [("idle in transaction",)]
        assert read_members(migrated_postgres_dsn) == table_before  # not visible: uncommitted
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL

    # The server notices the dead client and rolls back; nothing of the COPY survives.
    deadline = time.monotonic() + 30
    while _open_publish_transactions(migrated_postgres_dsn):
        assert time.monotonic() < deadline, "the killed publisher's transaction never ended"
        time.sleep(0.05)
    assert read_members(migrated_postgres_dsn) == table_before
    assert state.path.read_bytes() == state_before  # nothing marked published

    # The next run finds every row still pending and publishes it.
    result = PostgresPublisher(migrated_postgres_dsn, state=state).publish_members(pending, run_at=T3)
    assert (result.inserted, result.updated, result.unchanged) == (5, 7, 43)
    after = {row[0]: row for row in read_members(migrated_postgres_dsn)}
    assert len(after) == 55
    assert {k for k, row in after.items() if row[-1] == T3} == set(
        pending.filter((pl.col("engagement_score") == 7) | (pl.col("membership_id") >= "mem_0000050"))[
            "membership_id"
        ].to_list()
    )
