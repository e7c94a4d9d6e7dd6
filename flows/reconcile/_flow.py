"""The reconcile run itself: the steps in order, each timed in the run report, the run recorded either way.

No Prefect here: ``memberpulse run`` calls :func:`run_once` and the steps run as plain calls (fast, nothing
left running); deployments run ``reconcile_flow`` (``_prefect_flow``), where the same steps are Prefect tasks.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from memberpulse.contracts.checkpoints import checkpoint
from memberpulse.contracts.times import CLOCK_SKEW_ALLOWANCE
from memberpulse.errors import ConfigError, CorruptState, MemberpulseError, TransientError
from memberpulse.flows.deployment_runs import require_absolute_data_dir
from memberpulse.flows.publish import record_run, runs_with, target_name
from memberpulse.flows.reconcile._ingest import fold_settings_changed, scoring_state
from memberpulse.flows.reconcile._lock import run_lock
from memberpulse.flows.reconcile._report import RunMode, RunReport
from memberpulse.flows.reconcile._score import change_hints, drift, score
from memberpulse.flows.reconcile._steps import (
    Logger,
    compact_raw_history,
    ingest_step,
    note_ingested,
    note_scored,
    publish,
    run_step,
    snapshot,
)
from memberpulse.flows.reconcile._store import ReconcileStore
from memberpulse.flows.report import write_run_report
from memberpulse.flows.whop import list_snapshots
from memberpulse.settings import Settings

log = logging.getLogger("memberpulse.reconcile")


class OutputFailed(MemberpulseError):
    """The publish failed while the run's other outputs (state, snapshot) were written. ``cause`` is the
    publish error (its ``exit_code`` is the run's), ``report`` the run's report as the flow returns it."""

    def __init__(self, cause: MemberpulseError, report: dict[str, Any]) -> None:
        super().__init__(f"publish failed: {cause.message}", hint=cause.hint)
        self.cause = cause
        self.report = report


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
    if as_of is not None:
        check_as_of_not_future(as_of, now=started)
    run_as_of = (as_of or started).astimezone(UTC)
    report = RunReport(run_id=str(uuid.uuid4()), as_of=run_as_of, started_at=started, full_refresh=full_refresh)
    report.data_dir = str(settings.data_dir.resolve())
    report.test_webhooks_included = settings.include_test_webhooks
    report.publish_target = target_name(settings)
    if report.publish_target is None:
        logger.info("no Supabase target configured (SUPABASE_DB_URL or SUPABASE_URL): publishing nowhere")
    store = ReconcileStore(settings.warehouse_dir)
    with run_lock(settings.warehouse_dir, create=not dry_run):
        try:
            report.last_as_of = store.last_as_of(tolerate_damage=full_refresh)
            report.as_of = _ordinary_as_of(report, explicit=as_of is not None, manifest=store.manifest_path)
            report.mode = _mode(report, dry_run=dry_run)
            changed = None if full_refresh else fold_settings_changed(settings, store.load_manifest())
            report.warnings += [changed] if changed else []
            _run_steps(settings, report, store, run_at=started, logger=logger)
        except BaseException as exc:
            report.status = "failed"
            report.error = str(exc)
            report.finished_at = datetime.now(UTC)
            if isinstance(exc, Exception) and report.mode == "run":
                record_run(settings, report.pipeline_run(), rejects=None, best_effort=True)
            raise
    return report


def check_as_of_not_future(as_of: datetime, *, now: datetime) -> None:
    """An as-of later than now (beyond the clock-skew allowance) is refused before anything is read: scoring
    the future marks every member inactive, and committing it would put every later run behind it."""
    if as_of > now + CLOCK_SKEW_ALLOWANCE:
        raise ConfigError(
            f"--as-of {as_of.isoformat()} is in the future (now is {now.replace(microsecond=0).isoformat()})",
            hint="give a time up to now, or leave --as-of out to score as of now",
        )


def _ordinary_as_of(report: RunReport, *, explicit: bool, manifest: Path) -> datetime:
    """The as-of of a run with no ``--as-of``: now, or the last commit's when that lies within the clock-skew
    allowance ahead (another host's clock), so an ordinary run never goes back in time and always commits.

    A last commit further ahead than that was made under a clock far ahead (or by an older version that took a
    future ``--as-of``): every ordinary run would be behind it, so it stops with the remedy instead. A full
    refresh is that remedy: it rebuilds from the raw store as of now and replaces the future commit.
    """
    last, now = report.last_as_of, report.as_of
    if explicit or last is None or last <= now:
        return now
    if last <= now + CLOCK_SKEW_ALLOWANCE:
        return last
    if report.full_refresh:
        report.last_as_of = None  # replaced by this run's commit
        return now
    raise CorruptState(
        f"{manifest}: the last committed reconcile run is as of {last.isoformat()}, later than this machine's "
        f"clock ({now.replace(microsecond=0).isoformat()}); every run would be behind it",
        path=str(manifest),
        hint="if this clock is right, run `memberpulse run --full-refresh` once: it rebuilds from the raw store "
        "as of now; otherwise fix the clock",
    )


def _mode(report: RunReport, *, dry_run: bool) -> RunMode:
    """Looking back never overwrites the present: an as-of earlier than the last commit's commits nothing."""
    if dry_run:
        return "dry-run"
    last = report.last_as_of
    return "backdated" if last is not None and report.as_of < last else "run"


def _run_steps(
    settings: Settings, report: RunReport, store: ReconcileStore, *, run_at: datetime, logger: Logger
) -> None:
    with report.step("ingest"):
        ingested = run_step("ingest", ingest_step, settings, store, report)
    note_ingested(report, ingested, logger)
    checkpoint("after_ingest")

    with report.step("score"):
        state = scoring_state(settings, store, ingested, report.as_of)
        scored = score(settings, state, report.as_of)
        if report.mode == "run":
            _keep_history(store, report, scored, state_changed=ingested.changed)
    note_scored(report, scored)

    with report.step("publish"):
        hints = change_hints(settings, state, ingested, report.as_of) if report.mode == "run" else None
        published, report.publish_failure, outcome = publish(settings, report, scored, run_at, logger, hints)
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
        snapshot(
            settings, report, store, ingested,
            run_at=run_at, published=published, outcome=outcome, drift=drift_frame, runs=runs,
        )  # fmt: skip
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
        with report.step("compact"):
            compact_raw_history(settings, store, logger)


def _keep_history(store: ReconcileStore, report: RunReport, scored: pl.DataFrame, *, state_changed: bool) -> None:
    if report.full_refresh:  # history of a commit dated after this one (made under a clock ahead) goes
        store.drop_history_after(report.as_of)
    store.write_history(report.as_of, scored, state_changed=state_changed)


def data_dir_unused(settings: Settings) -> str | None:
    """Why the data dir looks like one no one writes to, or None when something has: a landing started on
    it (``serve`` creates ``landing/`` at start), a webhook stored or refused, a backfill, a recovery."""
    in_use = (
        settings.landing_dir.is_dir()
        or settings.quarantine_dir.is_dir()
        or (settings.warehouse_dir / "recovery").is_dir()
        or bool(list_snapshots(settings.warehouse_dir))
    )
    if in_use:
        return None
    return (
        f"{settings.data_dir.resolve()} has never received a webhook, a backfill or a recovery, and no landing "
        "was ever started on it"
    )


def check_data_dir(settings: Settings, *, deployment: bool) -> str | None:
    """Before a run reads anything: a warning to put in the run's report, or a ConfigError (exit 2) where a
    deployment run would otherwise read an empty directory and say Completed.

    A deployment run starts in a temporary directory, so a relative ``MEMBERPULSE_DATA_DIR`` is refused there;
    and with a landing or a backfill configured (its secret, its key), a data dir no one has written to means
    the worker looks elsewhere than they write.
    """
    if deployment:
        require_absolute_data_dir(settings)
    unused = data_dir_unused(settings)
    if unused is None:
        return None
    configured = settings.whop_webhook_secret is not None or settings.whop_api_key is not None
    if deployment and configured:
        raise ConfigError(
            f"{unused}, though a webhook secret or a Whop API key is configured",
            variable="MEMBERPULSE_DATA_DIR",
            hint="give the worker the same MEMBERPULSE_DATA_DIR as the landing (its environment, or "
            "MEMBERPULSE_ENV_FILE), or start the landing first",
        )
    return f"{unused} (hint: check MEMBERPULSE_DATA_DIR, or start `memberpulse serve` first)"
