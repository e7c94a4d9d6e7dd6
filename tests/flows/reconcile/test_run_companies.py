"""What a run did per company: its report's company lines (members scored, changed, published; new events,
rejects, drift), which add up to the run's own counts, shown by ``memberpulse run`` and kept in the snapshot's
``pipeline_run_companies`` (the last 90 days of runs). Real runs over webhooks of three companies."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from memberpulse.cli import main
from memberpulse.flows.reconcile import CompanyLine
from memberpulse.flows.reconcile._companies import log_path, record_run_companies
from memberpulse.flows.state_codec import RUN_COMPANY_LOG, read_table
from memberpulse.landing import mock_events as mock
from tests.support.companies_testkit import SIZES, company_member, several_companies
from tests.support.reconcile_testkit import AS_OF, append_raw, raw_record


def test_a_run_says_what_it_did_per_company_and_the_lines_add_up_to_the_run(tmp_path: Path) -> None:
    world = several_companies(tmp_path)
    first, second = world.runs

    assert first.companies == [
        CompanyLine("biz_alpha", members=6, members_changed=6, events_ingested=11, drift_count=1),
        CompanyLine("biz_beta", members=4, members_changed=4, events_ingested=7, rejects=1, drift_count=1),
        CompanyLine("biz_gamma", members=3, members_changed=3, events_ingested=4, drift_count=1),
    ]
    for run in world.runs:
        assert sum(line.events_ingested for line in run.companies) == run.events_ingested
        assert sum(line.rejects for line in run.companies) == run.rejects  # the landing's refusal is no company's
    assert first.landing_rejections == 1 and first.drift_count == 3 and first.members == sum(SIZES.values()) + 3
    # The second run read one alpha visit and one beta departure; gamma's scores only aged a day.
    assert {line.company_id: line.events_ingested for line in second.companies} == {
        "biz_alpha": 1,
        "biz_beta": 1,
        "biz_gamma": 0,
    }
    with duckdb.connect(str(world.settings.snapshots_dir / "latest.duckdb"), read_only=True) as con:
        kept = con.execute(
            "SELECT run_id, company_id, members, members_changed, rows_published, events_ingested, rejects, "
            "drift_count FROM pipeline_run_companies ORDER BY started_at, company_id"
        ).fetchall()
        runs = {row[0]: row[1] for row in con.execute("SELECT run_id, started_at FROM pipeline_runs").fetchall()}
    assert kept == [(run.run_id, *_values(line)) for run in world.runs for line in run.companies]
    assert set(runs) == {first.run_id, second.run_id}
    logged = read_table(log_path(world.settings.warehouse_dir), RUN_COMPANY_LOG)
    assert logged.height == len(kept)


def _values(line: CompanyLine) -> tuple[object, ...]:
    return (line.company_id, line.members, line.members_changed, line.rows_published, line.events_ingested,
            line.rejects, line.drift_count)  # fmt: skip


def test_a_quiet_company_gets_no_line_and_lines_older_than_90_days_go(tmp_path: Path) -> None:
    world = several_companies(tmp_path)
    settings, (_, second) = world.settings, world.runs
    log = read_table(log_path(settings.warehouse_dir), RUN_COMPANY_LOG)
    ancient = log.head(1).with_columns(run_id=pl.lit("ancient"), started_at=pl.col("started_at") - timedelta(days=91))
    record_run_companies(settings.warehouse_dir, pl.concat([ancient, log]))

    append_raw(tmp_path, [raw_record(mock.accessed(company_member("biz_gamma", 1), accessed_at=AS_OF))], writer="g")
    assert main_run(settings.data_dir) == 0
    logged = read_table(log_path(settings.warehouse_dir), RUN_COMPANY_LOG)

    latest = logged.filter(pl.col("started_at") == pl.col("started_at").max())
    assert latest["company_id"].to_list() == ["biz_gamma"]  # the same as-of: only gamma changed
    assert "ancient" not in logged["run_id"].to_list() and second.run_id in logged["run_id"].to_list()


def main_run(data_dir: Path) -> int:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEMBERPULSE_DATA_DIR", str(data_dir))
        return main(["run", "--as-of", AS_OF.isoformat()])


def test_memberpulse_run_shows_the_per_company_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = several_companies(tmp_path / "data")
    visit = raw_record(mock.accessed(company_member("biz_beta", 1), accessed_at=AS_OF))
    append_raw(world.settings.data_dir, [visit], writer="b")
    capsys.readouterr()
    assert main_run(world.settings.data_dir) == 0
    out = capsys.readouterr().out

    assert "Per company (1 touched by this run)" in out
    [row] = [row for row in out.splitlines() if "biz_beta" in row]
    # company, members, changed, published (no target), new events, rejects, drift
    assert [cell.strip() for cell in row.split("│")[1:-1]] == ["biz_beta", "4", "1", "0", "1", "0", "1"]


@pytest.mark.slow
def test_with_a_target_the_changed_rows_of_each_company_are_published(
    tmp_path: Path, migrated_postgres_dsn: str
) -> None:
    first, _ = several_companies(tmp_path, SUPABASE_DB_URL=migrated_postgres_dsn).runs
    assert [(line.company_id, line.rows_published) for line in first.companies] == [
        ("biz_alpha", 6), ("biz_beta", 4), ("biz_gamma", 3),
    ]  # fmt: skip
    assert sum(line.rows_published for line in first.companies) == first.inserted + first.updated
