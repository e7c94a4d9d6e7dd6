"""The numbers the report shows agree with each other and with the run summary: drift bars add up to the
headline, the pipeline chart carries the run summary's two failure counts under the summary's names, and the
cohort heatmap starts at the first cohort or says what it leaves out. Real DuckDB snapshots written by the
snapshot writer from small hand-made data; no browser."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path

import polars as pl

from memberpulse.contracts.tables import PIPELINE_RUNS
from memberpulse.flows.reconcile import RunReport
from memberpulse.flows.report import build_report, report_charts
from memberpulse.flows.report._queries import COHORTS_SHOWN, RUNS_SHOWN
from memberpulse.flows.snapshot import write_snapshot

TS = pl.Datetime("us", "UTC")
RUN_AT = datetime(2026, 11, 18, 12, tzinfo=UTC)  # a Wednesday; its week starts Monday 2026-11-16
MONDAY = datetime(2026, 11, 16, 10, tzinfo=UTC)


def _members(joined: list[datetime]) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "membership_id": [f"mem_{i}" for i in range(len(joined))],
            "company_id": "biz_1",
            "user_id": None,
            "member_name": None,
            "email": None,
            "status": "active",
            "engagement_score": 50,
            "activity_score": 50,
            "joined_at": joined,
            "last_active": joined,
            "total_sessions": 1,
            "membership_status": "active",
            "valid": True,
            "updated_at": RUN_AT,
        }
    )
    return frame.with_columns(pl.col("joined_at", "last_active", "updated_at").cast(TS),
                              pl.col("user_id", "member_name", "email").cast(pl.Utf8))  # fmt: skip


def _runs(reports: list[RunReport]) -> pl.DataFrame:
    return pl.DataFrame([r.pipeline_run().as_row() for r in reports], schema=dict(PIPELINE_RUNS.schema))


def _snapshot(
    tmp_path: Path,
    *,
    joined: list[datetime] | None = None,
    drift: list[str] = (),  # type: ignore[assignment]
    runs: pl.DataFrame | None = None,
) -> Path:
    snapshots = tmp_path / "snapshots"
    drifting = pl.DataFrame({"membership_id": [f"mem_d{i}" for i in range(len(drift))], "reason": drift},
                            schema={"membership_id": pl.Utf8, "reason": pl.Utf8})  # fmt: skip
    write_snapshot(
        snapshots,
        run_id="report-numbers",
        run_at=RUN_AT,
        member_activity=_members(joined or [MONDAY]),
        events=None,
        drift=drifting,
        pipeline_runs=runs if runs is not None else _runs([]),
        keep=2,
    )
    return snapshots


def _run(minute: int, *, rejects: int, refused: int) -> RunReport:
    started = RUN_AT + timedelta(minutes=minute)
    return RunReport(run_id=f"run-{minute:03d}", as_of=started, started_at=started,
                     finished_at=started + timedelta(seconds=2), status="completed", rejects=rejects,
                     landing_rejections=refused)  # fmt: skip


def test_the_drift_bars_add_up_to_the_memberships_drifting_in_the_headline(tmp_path: Path) -> None:
    # Two memberships have two kinds each: counted per kind, the bars would add up to 7.
    reasons = ["validity,status", "status", "status", "api_only", "webhook_only,validity"]
    snapshots = _snapshot(tmp_path, drift=reasons)

    drift = report_charts(snapshots)["drift-by-kind"]
    html = build_report(snapshots)

    bars = dict(zip(drift.figure.data[0].y, drift.figure.data[0].x, strict=True))
    assert bars == {"status": 2, "validity + status": 1, "api_only": 1, "webhook_only + validity": 1}
    headline = re.search(r'<div class="value">([\d,]+)</div><div class="label">memberships drifting</div>', html)
    assert headline and int(headline.group(1)) == sum(bars.values()) == len(reasons)
    assert drift.title.startswith(f"Drift: {len(reasons)} memberships") and escape(drift.title) in html
    assert drift.note and "counted once" in drift.note and escape(drift.note) in html


def test_the_pipeline_chart_shows_each_run_summary_s_rejects_and_refusals_under_its_names(tmp_path: Path) -> None:
    # The first run is the one a reader found: nothing unparseable, one webhook refused by the landing.
    reports = [_run(0, rejects=0, refused=1), _run(5, rejects=2, refused=0), _run(10, rejects=3, refused=4)]
    snapshots = _snapshot(tmp_path, runs=_runs(reports))

    pipeline = report_charts(snapshots)["pipeline-health"]

    lines = [trace for trace in pipeline.figure.data if trace.type == "scatter"]
    assert len(lines) == 2
    for trace in lines:
        for report, shown in zip(reports, trace.y, strict=True):
            assert dict(report.summary_rows())[trace.name] == str(shown), (trace.name, report.run_id)
    assert {trace.name for trace in lines} == {"rejects (unparseable records)", "refused by the landing (quarantine)"}
    assert pipeline.note is None  # every run is shown


def test_runs_recorded_before_the_refusal_count_show_none_rather_than_stop_the_report(tmp_path: Path) -> None:
    older = _runs([_run(0, rejects=1, refused=0), _run(5, rejects=0, refused=0)]).drop("landing_rejections")
    snapshots = _snapshot(tmp_path, runs=older)

    pipeline = report_charts(snapshots)["pipeline-health"]

    by_name = {trace.name: list(trace.y) for trace in pipeline.figure.data if trace.type == "scatter"}
    assert by_name == {"rejects (unparseable records)": [1, 0], "refused by the landing (quarantine)": [None, None]}


def test_the_cohort_heatmap_starts_at_the_first_cohort(tmp_path: Path) -> None:
    weeks = 40  # more than the 26 the heatmap used to keep without saying so
    snapshots = _snapshot(tmp_path, joined=[MONDAY - timedelta(weeks=w) for w in range(weeks)])

    cohorts = report_charts(snapshots)["cohort-retention"]

    shown = list(cohorts.figure.data[0].y)
    assert len(shown) == weeks and shown[0] == str((MONDAY - timedelta(weeks=weeks - 1)).date())
    assert cohorts.note is None


def test_a_bounded_chart_says_how_much_it_leaves_out(tmp_path: Path) -> None:
    weeks, runs = COHORTS_SHOWN + 3, RUNS_SHOWN + 2
    snapshots = _snapshot(tmp_path, joined=[MONDAY - timedelta(weeks=w) for w in range(weeks)],
                          runs=_runs([_run(m, rejects=0, refused=0) for m in range(runs)]))  # fmt: skip

    charts, html = report_charts(snapshots), build_report(snapshots)

    cohorts, pipeline = charts["cohort-retention"], charts["pipeline-health"]
    assert len(cohorts.figure.data[0].y) == COHORTS_SHOWN
    assert cohorts.figure.data[0].y[-1] == str(MONDAY.date())  # the newest kept
    assert cohorts.note == f"Showing the last {COHORTS_SHOWN} of {weeks} weekly cohorts." and cohorts.note in html
    assert len(pipeline.figure.data[0].x) == RUNS_SHOWN
    assert pipeline.note == f"Showing the last {RUNS_SHOWN} of {runs} runs." and pipeline.note in html
