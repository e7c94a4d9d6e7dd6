"""The analysts' report: written by every reconcile run (Prefect test harness, real files, a real DuckDB
snapshot), self-contained, and never a reason for a run to fail."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from memberpulse.flows.reconcile import reconcile_flow
from memberpulse.flows.report import CHART_NAMES, REPORT_NAME, build_report, write_run_report
from tests.support.reconcile_testkit import AS_OF, append_raw, make_settings, scenario

# slow: runs the reconcile flow under Prefect's test harness
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_every_run_writes_the_report_beside_its_snapshot_and_an_artifact_points_to_it(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    settings = make_settings(tmp_path)
    append_raw(tmp_path, scenario())
    state = reconcile_flow(as_of=AS_OF, settings=settings, return_state=True)
    result = state.result()
    report = settings.snapshots_dir / REPORT_NAME
    assert result["status"] == "completed" and result["analyst_report"] == str(report)
    html = report.read_text(encoding="utf-8")
    for name in CHART_NAMES:
        assert f'id="chart-{name}"' in html
    # the scenario's one member at risk, listed (a first run has no earlier run to compare with)
    assert "1 members at risk now (no earlier run to compare with)" in html and "m2@example.com" in html

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    by_key = {a.key: a for a in artifacts}
    assert report.resolve().as_uri() in str(by_key["analyst-report"].data)
    assert str(report) in str(by_key["reconcile-summary"].data)

    # the next run replaces it in place
    first = report.stat().st_mtime_ns
    reconcile_flow(as_of=AS_OF, settings=settings)
    assert report.stat().st_mtime_ns > first and not list(settings.snapshots_dir.glob(f".tmp-*{REPORT_NAME}"))


def test_a_report_that_cannot_be_written_leaves_the_run_and_its_snapshot_standing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    append_raw(tmp_path, scenario())
    (settings.snapshots_dir / REPORT_NAME).mkdir(parents=True)  # a directory where the file should go

    result = reconcile_flow(as_of=AS_OF, settings=settings)

    assert result["status"] == "completed"
    assert str(result["analyst_report"]).startswith("not written: ")
    assert Path(str(result["snapshot_path"])).is_file()
    assert (settings.snapshots_dir / "latest.duckdb").is_file()
    assert (settings.snapshots_dir / REPORT_NAME).is_dir()  # untouched


def test_the_report_is_one_self_contained_page(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    append_raw(tmp_path, scenario())
    reconcile_flow(as_of=AS_OF, settings=settings)

    html = build_report(settings.snapshots_dir)

    assert "<script src" not in html and "<link" not in html  # nothing loaded from elsewhere
    markup = re.sub(r"<script[^>]*>.*?</script>", "", html, flags=re.S)  # the page itself, scripts aside
    assert not re.search(r"""(src|href)=["']?https?://""", markup)  # (the browser test watches the network)
    assert "Plotly.newPlot" in html and html.count("<script") == 1 + len(CHART_NAMES)  # plotly.js + one per chart
    assert "Members newly at risk this week" in html


def test_no_snapshot_yet_says_how_to_get_one(tmp_path: Path) -> None:
    outcome = write_run_report(tmp_path / "snapshots")
    assert outcome.startswith("not written: no snapshot yet") and "memberpulse run" in outcome
