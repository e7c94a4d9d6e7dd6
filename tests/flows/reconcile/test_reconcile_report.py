"""The reconcile run report: the pipeline_runs row, the markdown artifact and the terminal summary are three
views of one object, so they agree (publish counts appear in both summaries only when there is a target)."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from memberpulse.cli.run import print_summary
from memberpulse.flows.reconcile import RunReport

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 27, 12, 1, tzinfo=UTC)


def _report(target: str | None) -> RunReport:
    return RunReport(
        run_id="0123456789abcdef",
        as_of=T0,
        started_at=T0,
        finished_at=T1,
        status="completed",
        events_ingested=7,
        rejects=2,
        landing_rejections=6,
        members=4,
        members_by_status={"active": 3, "at_risk": 1},
        publish_target=target,
        inserted=3,
        updated=1,
        unchanged=9,
        drift_count=5,
        snapshot_path="/data/snapshots/latest.duckdb",
    )


def _terminal(report: RunReport) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    print_summary(report, console)
    return console.export_text()


def test_the_pipeline_runs_row_reads_the_report() -> None:
    run = _report("postgres://db").pipeline_run()
    assert (run.run_id, run.flow, run.status, run.started_at, run.finished_at) == (
        "0123456789abcdef", "reconcile", "completed", T0, T1,
    )  # fmt: skip
    assert (run.events_ingested, run.rejects, run.rows_inserted, run.rows_updated, run.rows_unchanged) == (
        7,
        2,
        3,
        1,
        9,
    )
    assert run.drift_count == 5 and run.error is None
    assert run.landing_rejections == 6  # refused by the landing: counted apart from the rejects


def test_both_summaries_show_publish_counts_only_with_a_target() -> None:
    with_target, without = _report("postgres://db"), _report(None)
    assert "| rows inserted / updated / unchanged | 3 / 1 / 9 |" in with_target.markdown()
    assert "3 / 1 / 9" in _terminal(with_target)
    assert "inserted" not in without.markdown() and "inserted" not in _terminal(without)
    assert "nowhere" in without.markdown() and "nowhere" in _terminal(without)


def test_every_summary_row_reaches_both_views() -> None:
    report = _report("postgres://db")
    markdown, terminal = report.markdown(), _terminal(report)
    for name, value in report.summary_rows():
        assert f"| {name} | {value} |" in markdown
        assert name in terminal and value in terminal
    assert "| at_risk | 1 |" in markdown and "at_risk" in terminal


def test_the_flow_result_round_trips_to_the_same_report() -> None:
    report = _report(None)
    values = report.as_dict()
    assert values["as_of"] == T0.isoformat() and values["finished_at"] == T1.isoformat()
    assert RunReport.from_dict(values) == report
