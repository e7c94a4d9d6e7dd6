"""The step list (``STEPS``) is what a run takes: each mode's run times exactly its steps, in the list's order,
and every step's result reaches the report (the one object every view reads)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from memberpulse.flows.reconcile import STEPS, reconcile, steps_for
from tests.support.reconcile_testkit import AS_OF, append_raw, make_settings, scenario


def test_each_mode_takes_the_steps_the_list_gives_it_in_order(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    append_raw(tmp_path, scenario())
    dry = reconcile(settings, as_of=AS_OF, full_refresh=False, dry_run=True)
    run = reconcile(settings, as_of=AS_OF, full_refresh=False)
    back = reconcile(settings, as_of=AS_OF - timedelta(days=1), full_refresh=False)

    assert [s.name for s in STEPS] == ["ingest", "score", "publish", "drift", "snapshot", "report", "record", "compact"]
    for report in (dry, run, back):
        assert list(report.seconds) == [s.name for s in steps_for(report.mode)], report.mode
    assert (dry.mode, run.mode, back.mode) == ("dry-run", "run", "backdated")


def test_the_report_is_assembled_from_every_steps_result(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    append_raw(tmp_path, scenario())
    report = reconcile(settings, as_of=AS_OF, full_refresh=False, warnings=["look here"])

    assert report.status == "completed" and report.finished_at is not None and report.error is None
    assert report.events_ingested > 0 and report.members == 4  # ingest, score
    assert report.unchanged == 4 and report.publish_target is None  # publish (nowhere: every row stamped)
    assert report.newly_at_risk_count == len(report.newly_at_risk)
    assert report.snapshot_path and Path(report.snapshot_path).is_file()  # snapshot
    assert report.analyst_report and report.analyst_report.endswith("report.html")  # report
    assert sum(report.members_by_status.values()) == report.members
    assert report.warnings == ["look here"]
    assert report.pipeline_run().rows_unchanged == 4
