"""The reconcile flow itself: the steps in order, each timed in the run report, the run recorded either way.

Prefect loads this file by path for deployments (``prefect.yaml``), so every import here is absolute.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from memberpulse.contracts.checkpoints import checkpoint
from memberpulse.flows.publish import record_run, target_name
from memberpulse.flows.reconcile._ingest import scoring_state
from memberpulse.flows.reconcile._lock import run_lock
from memberpulse.flows.reconcile._report import AT_RISK_LISTED, RunReport
from memberpulse.flows.reconcile._score import change_hints, drift, score
from memberpulse.flows.reconcile._steps import Logger, ingest_task, note_ingested, note_scored, publish, snapshot
from memberpulse.flows.report import write_run_report
from memberpulse.flows.warehouse import ReconcileStore
from memberpulse.settings import Settings

log = logging.getLogger("memberpulse.reconcile")


@flow(name="reconcile", log_prints=False)
def reconcile_flow(
    as_of: datetime | None = None, full_refresh: bool = False, settings: Settings | None = None
) -> dict[str, Any]:
    """Ingest new raw webhooks, fold, score, publish changed rows, write the DuckDB snapshot.

    A deployment passes no ``settings`` and reads the environment; the CLI passes its own (Prefect records
    parameters, and ``SecretStr`` fields serialise masked, so no secret reaches its database).
    """
    settings = settings or Settings()
    report = reconcile(settings, as_of=as_of, full_refresh=full_refresh, logger=get_run_logger())
    create_markdown_artifact(report.markdown(), key="reconcile-summary", description="Reconcile run")
    create_table_artifact(
        report.newly_at_risk or [{"membership_id": "(none)"}],
        key="members-newly-at-risk",
        description=f"Members whose status became at_risk in this run (at most {AT_RISK_LISTED} listed)",
    )
    return report.as_dict()


def reconcile(settings: Settings, *, as_of: datetime | None, full_refresh: bool, logger: Logger = log) -> RunReport:
    """One run, in the order the package docstring gives; on failure the run is recorded as failed."""
    started = datetime.now(UTC)
    as_of = (as_of or started).astimezone(UTC)
    report = RunReport(run_id=str(uuid.uuid4()), as_of=as_of, started_at=started, full_refresh=full_refresh)
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
        ingested = ingest_task(settings, store, report.run_id, report.full_refresh)
    note_ingested(report, ingested, logger)
    checkpoint("after_ingest")

    with report.step("score"):
        state = scoring_state(settings, store, ingested, report.as_of)
        scored = score(settings, state, report.as_of)
        store.write_history(report.as_of, scored, state_changed=ingested.changed)
    note_scored(report, scored)

    with report.step("publish"):
        hints = change_hints(settings, state, ingested, report.as_of)
        published = publish(settings, report, scored, run_at, logger, hints)
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
    with report.step("report"):
        report.analyst_report = write_run_report(settings.snapshots_dir, logger)


def run_once(settings: Settings, *, as_of: datetime | None, full_refresh: bool) -> int:
    """``memberpulse run``: one reconcile flow run in Prefect's ephemeral mode, then a summary table."""
    result = reconcile_flow(as_of=as_of, full_refresh=full_refresh, settings=settings)
    RunReport.from_dict(result).print_summary()
    return 0
