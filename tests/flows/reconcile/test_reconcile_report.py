"""The reconcile run report: the pipeline_runs row, the markdown artifact and the terminal summary are three
views of one object, so they agree (publish counts appear in both summaries only when there is a target)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from rich.console import Console

from memberpulse.cli.run import print_summary
from memberpulse.flows.reconcile import CompanyLine, RunReport
from memberpulse.flows.reconcile._companies import COMPANIES_LISTED

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
        companies=[
            CompanyLine("biz_a", members=3, members_changed=1, rows_published=1, events_ingested=5, drift_count=4),
            CompanyLine(None, members=1, members_changed=3, rows_published=3, events_ingested=2, rejects=2),
        ],
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


def test_both_summaries_list_the_companies_busiest_first_and_say_how_many_more() -> None:
    report = _report(None)
    markdown, terminal = report.markdown(), _terminal(report)
    assert "| (no company named) | 1 | 3 | 3 | 2 | 2 | 0 |\n| biz_a | 3 | 1 | 1 | 5 | 0 | 4 |" in markdown
    assert "Per company (2 touched by this run)" in terminal and "│ None" not in terminal
    assert terminal.index("(no company named)") < terminal.index("biz_a")  # the most changed rows first

    many = [CompanyLine(f"biz_{n:03d}", members=1, members_changed=1) for n in range(COMPANIES_LISTED + 5)]
    crowded = dataclasses.replace(report, companies=many)
    assert "… and 5 more companies" in crowded.markdown() and "… and 5 more companies" in _terminal(crowded)
    assert "biz_000" in _terminal(crowded) and f"biz_{COMPANIES_LISTED:03d}" not in _terminal(crowded)
