"""The reconcile run itself: the steps in order, each timed in the run report, the run recorded either way.

No Prefect here: ``memberpulse run`` calls :func:`run_once` and the steps run as plain calls (fast, nothing
left running); deployments run ``reconcile_flow`` (``_prefect_flow``), where the same steps are Prefect tasks.
"""

from __future__ import annotations

import logging
import sys
import uuid
from datetime import UTC, datetime

from memberpulse.contracts.checkpoints import checkpoint
from memberpulse.flows.publish import record_run, target_name
from memberpulse.flows.reconcile._ingest import scoring_state
from memberpulse.flows.reconcile._lock import run_lock
from memberpulse.flows.reconcile._report import RunReport
from memberpulse.flows.reconcile._score import drift, score
from memberpulse.flows.reconcile._steps import (
    Logger,
    ingest_step,
    note_ingested,
    note_scored,
    publish,
    run_step,
    snapshot,
)
from memberpulse.flows.warehouse import ReconcileStore
from memberpulse.flows.whop import list_snapshots
from memberpulse.settings import Settings

log = logging.getLogger("memberpulse.reconcile")


def reconcile(settings: Settings, *, as_of: datetime | None, full_refresh: bool, logger: Logger = log) -> RunReport:
    """One run, in the order the package docstring gives; on failure the run is recorded as failed."""
    started = datetime.now(UTC)
    as_of = (as_of or started).astimezone(UTC)
    report = RunReport(run_id=str(uuid.uuid4()), as_of=as_of, started_at=started, full_refresh=full_refresh)
    report.data_dir = str(settings.data_dir.resolve())
    report.test_webhooks_included = settings.include_test_webhooks
    report.publish_target = target_name(settings)
    if report.publish_target is None:
        logger.info("no Supabase target configured (SUPABASE_DB_URL or SUPABASE_URL): publishing nowhere")
    with run_lock(settings.warehouse_dir):
        try:
            _run_steps(settings, report, run_at=started, logger=logger)
        except BaseException as exc:
            report.status = "failed"
            report.error = str(exc)
            report.finished_at = datetime.now(UTC)
            if isinstance(exc, Exception):
                record_run(settings, report.pipeline_run(), rejects=None, best_effort=True)
            raise
    return report


def _run_steps(settings: Settings, report: RunReport, *, run_at: datetime, logger: Logger) -> None:
    store = ReconcileStore(settings.warehouse_dir)
    with report.step("ingest"):
        ingested = run_step("ingest", ingest_step, settings, store, report.run_id, report.full_refresh)
    note_ingested(report, ingested, logger)
    checkpoint("after_ingest")

    with report.step("score"):
        scored = score(settings, scoring_state(settings, store, ingested, report.as_of), report.as_of)
        store.write_history(report.as_of, scored)
    note_scored(report, scored)

    with report.step("publish"):
        published = publish(settings, report, scored, run_at, logger)
    with report.step("drift"):
        drift_frame = drift(settings, ingested.state)
    report.drift_count = len(drift_frame)
    report.status = "completed"
    report.finished_at = datetime.now(UTC)
    with report.step("record"):
        runs = record_run(settings, report.pipeline_run(), rejects=ingested.failures)
    with report.step("snapshot"):
        snapshot(settings, report, store, ingested, run_at=run_at, published=published, drift=drift_frame, runs=runs)
    logger.info("snapshot written: %s", report.snapshot_path)


def run_once(settings: Settings, *, as_of: datetime | None, full_refresh: bool) -> int:
    """``memberpulse run``: one run of the same steps, without Prefect (no API server to start or leave
    behind; deployments keep full Prefect tracking), then a summary table."""
    if not has_received_data(settings):
        print(
            f"memberpulse run: warning: {settings.data_dir.resolve()} has never received a webhook or a backfill "
            "(hint: check MEMBERPULSE_DATA_DIR or the directory you run from)",
            file=sys.stderr,
        )
    reconcile(settings, as_of=as_of, full_refresh=full_refresh).print_summary()
    return 0


def has_received_data(settings: Settings) -> bool:
    """Whether the data dir has ever held a raw webhook, a refused one, or a backfill snapshot."""
    for directory in (settings.landing_dir, settings.quarantine_dir):
        if directory.is_dir() and next((p for p in directory.rglob("*") if p.is_file()), None) is not None:
            return True
    return bool(list_snapshots(settings.warehouse_dir))
