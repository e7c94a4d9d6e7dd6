"""The reconcile flow itself: the steps in order, each timed in the run report, the run recorded either way.

Deployments (``prefect.yaml``) name ``memberpulse.flows.reconcile.reconcile_flow``, resolved from the installed package.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from memberpulse.contracts.checkpoints import checkpoint
from memberpulse.errors import ExitCode, MemberpulseError, TransientError
from memberpulse.flows.event_runs import landed_since_last_commit, supersede_queued_runs
from memberpulse.flows.publish import record_run, runs_with, target_name
from memberpulse.flows.reconcile._ingest import scoring_state
from memberpulse.flows.reconcile._lock import run_lock
from memberpulse.flows.reconcile._report import AT_RISK_LISTED, RunMode, RunReport
from memberpulse.flows.reconcile._score import drift, score
from memberpulse.flows.reconcile._steps import Logger, ingest_task, note_ingested, note_scored, publish, snapshot
from memberpulse.flows.report import write_run_report
from memberpulse.flows.warehouse import ReconcileStore
from memberpulse.settings import Settings

log = logging.getLogger("memberpulse.reconcile")
# Prefect logs a failed task or flow run at ERROR with its full traceback; a CLI run says it once instead.
_PREFECT_RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs", "prefect.engine")


class OutputFailed(MemberpulseError):
    """The publish failed while the run's other outputs (state, snapshot) were written. ``cause`` is the
    publish error (its ``exit_code`` is the run's), ``report`` the run's report as the flow returns it."""

    def __init__(self, cause: MemberpulseError, report: dict[str, Any]) -> None:
        super().__init__(f"publish failed: {cause.message}", hint=cause.hint)
        self.cause = cause
        self.report = report


@flow(name="reconcile", log_prints=False)
def reconcile_flow(
    as_of: datetime | None = None,
    full_refresh: bool = False,
    settings: Settings | None = None,
    dry_run: bool = False,
    only_new: bool = False,
    catch_up_seconds: float = 0.0,
) -> dict[str, Any]:
    """Ingest new raw webhooks, fold, score, publish changed rows, write the DuckDB snapshot.

    A deployment passes no ``settings`` and reads the environment; the CLI passes its own (Prefect records
    parameters, and ``SecretStr`` fields serialise masked, so no secret reaches its database). A failed
    publish fails the flow run (:class:`OutputFailed`) after every other output was written.

    Event-driven runs (prefect.yaml): ``only_new`` returns at once when nothing landed since the last commit;
    ``catch_up_seconds`` > 0 makes the run pass again while more webhooks landed during a pass (for at most
    that long), each pass first superseding the queued event-triggered runs it covers
    (:mod:`memberpulse.flows.event_runs`).
    """
    settings = settings or Settings()
    logger = get_run_logger()
    if only_new and not full_refresh and as_of is None and not landed_since_last_commit(settings):
        superseded = supersede_queued_runs(logger)
        logger.info("nothing landed since the last reconcile: skipped")
        return {"status": "skipped", "passes": 0, "superseded": superseded}
    follow = catch_up_seconds > 0 and as_of is None and not dry_run
    deadline = time.monotonic() + catch_up_seconds
    passes = superseded = 0
    while True:
        superseded += supersede_queued_runs(logger) if follow else 0
        first = passes == 0
        report = reconcile(settings, as_of=as_of, full_refresh=full_refresh and first, dry_run=dry_run, logger=logger)
        passes += 1
        _create_artifacts(report)
        if report.publish_failure is not None:
            raise OutputFailed(report.publish_failure, report.as_dict())
        if not follow or report.records_read == 0 or time.monotonic() >= deadline:
            break
        if not landed_since_last_commit(settings):
            break
        logger.info("more webhooks landed during pass %d: passing again", passes)
    return {**report.as_dict(), "passes": passes, "superseded": superseded}


def _create_artifacts(report: RunReport) -> None:
    create_markdown_artifact(report.markdown(), key="reconcile-summary", description="Reconcile run")
    create_table_artifact(
        report.newly_at_risk or [{"membership_id": "(none)"}],
        key="members-newly-at-risk",
        description=f"Members whose status became at_risk in this run (at most {AT_RISK_LISTED} listed)",
    )


def reconcile(
    settings: Settings,
    *,
    as_of: datetime | None,
    full_refresh: bool,
    dry_run: bool = False,
    logger: Logger = log,
) -> RunReport:
    """One run, in the order the package docstring gives; on failure the run is recorded as failed."""
    started = datetime.now(UTC)
    as_of = (as_of or started).astimezone(UTC)
    report = RunReport(run_id=str(uuid.uuid4()), as_of=as_of, started_at=started, full_refresh=full_refresh)
    report.publish_target = target_name(settings)
    if report.publish_target is None:
        logger.info("no Supabase target configured (SUPABASE_DB_URL or SUPABASE_URL): publishing nowhere")
    store = ReconcileStore(settings.warehouse_dir)
    with run_lock(settings.warehouse_dir, create=not dry_run):
        try:
            report.last_as_of = store.last_as_of(tolerate_damage=full_refresh)
            report.mode = _mode(as_of, report.last_as_of, dry_run=dry_run)
            _run_steps(settings, report, store, run_at=started, logger=logger)
        except BaseException as exc:
            report.status = "failed"
            report.error = str(exc)
            report.finished_at = datetime.now(UTC)
            if isinstance(exc, Exception) and report.mode == "run":
                record_run(settings, report.pipeline_run(), rejects=None, best_effort=True)
            raise
    return report


def _mode(as_of: datetime, last_as_of: datetime | None, *, dry_run: bool) -> RunMode:
    """Looking back never overwrites the present: an as-of earlier than the last commit's commits nothing."""
    if dry_run:
        return "dry-run"
    return "backdated" if last_as_of is not None and as_of < last_as_of else "run"


def _run_steps(
    settings: Settings, report: RunReport, store: ReconcileStore, *, run_at: datetime, logger: Logger
) -> None:
    with report.step("ingest"):
        ingested = ingest_task(settings, store, report)
    note_ingested(report, ingested, logger)
    checkpoint("after_ingest")

    with report.step("score"):
        scored = score(settings, scoring_state(settings, store, ingested, report.as_of), report.as_of)
        if report.mode == "run":
            store.write_history(report.as_of, scored)
    note_scored(report, scored)

    with report.step("publish"):
        published, report.publish_failure = publish(settings, report, scored, run_at, logger)
    with report.step("drift"):
        drift_frame = drift(settings, ingested.state)
    report.drift_count = len(drift_frame)
    failure = report.publish_failure
    report.status = "failed" if failure else "completed"
    report.error = f"publish failed: {failure.message}; the snapshot was written" if failure else None
    report.finished_at = datetime.now(UTC)
    if report.mode == "dry-run":
        return
    # The snapshot carries this run's row as it will be recorded; the run log and the target hear of the run
    # only after the snapshot is in place, so no record says "completed" while an output is missing.
    with report.step("snapshot"):
        runs = runs_with(settings, report.pipeline_run())
        snapshot(settings, report, store, ingested, run_at=run_at, published=published, drift=drift_frame, runs=runs)
    logger.info("snapshot written: %s", report.snapshot_path)
    if report.mode == "run":
        with report.step("report"):
            report.analyst_report = write_run_report(settings.snapshots_dir, logger)
        with report.step("record"):
            record_run(
                settings,
                report.pipeline_run(),
                rejects=ingested.failures,
                best_effort=failure is not None,
                local_only=isinstance(failure, TransientError),  # the target is down: do not wait on it again
            )


def run_once(settings: Settings, *, as_of: datetime | None, full_refresh: bool, dry_run: bool = False) -> int:
    """``memberpulse run``: one reconcile flow run in Prefect's ephemeral mode, then a summary table.

    A failed publish prints the summary (the snapshot was written) and a few lines saying what failed and
    what to do, and returns the publish error's exit code (3 when the target may heal).
    """
    if not full_refresh:
        ReconcileStore(settings.warehouse_dir).check_readable()  # damaged state: say so before Prefect starts
    with _prefect_failures_quiet(debug=settings.log_level.upper() == "DEBUG"):
        try:
            result = reconcile_flow(as_of=as_of, full_refresh=full_refresh, settings=settings, dry_run=dry_run)
        except OutputFailed as exc:
            report = RunReport.from_dict(exc.report)
            report.print_summary()
            what_to_do = (exc.hint or "fix the publish target").rstrip(".")
            print(
                f"memberpulse run: {exc.message}\n"
                f"  the snapshot was written all the same: {report.snapshot_path}\n"
                f"  what to do: {what_to_do} — then run `memberpulse run` again; it sends every pending row",
                file=sys.stderr,
            )
            return int(exc.cause.exit_code)
    RunReport.from_dict(result).print_summary()
    return int(ExitCode.OK)


class _DropRunFailures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextmanager
def _prefect_failures_quiet(*, debug: bool) -> Iterator[None]:
    """Keep Prefect's ERROR lines (with tracebacks) for failed task and flow runs out of a CLI run's
    terminal; the CLI prints the error once. With MEMBERPULSE_LOG_LEVEL=DEBUG they stay."""
    if debug:
        yield
        return
    drop = _DropRunFailures()
    loggers = [logging.getLogger(name) for name in _PREFECT_RUN_LOGGERS]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)
