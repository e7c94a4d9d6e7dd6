"""The reconcile run itself: the steps of ``_step_list.STEPS`` in order, each timed, the report assembled from
what they returned (``_report.assemble_report``), the run recorded either way.

No Prefect here: ``memberpulse run`` calls :func:`reconcile` and the steps run as plain calls (fast, nothing
left running); deployments run ``reconcile_flow`` (``_prefect_flow``), where the same steps are Prefect tasks.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memberpulse.contracts.checkpoints import checkpoint
from memberpulse.contracts.times import CLOCK_BEHIND_LIMIT, CLOCK_SKEW_ALLOWANCE
from memberpulse.errors import ConfigError, CorruptState, MemberpulseError, TransientError
from memberpulse.flows.deployment_runs import require_absolute_data_dir
from memberpulse.flows.publish import record_run, target_name
from memberpulse.flows.reconcile._companies import run_companies_with
from memberpulse.flows.reconcile._ingest import fold_settings_changed
from memberpulse.flows.reconcile._lock import run_lock
from memberpulse.flows.reconcile._report import RunReport, StepResults, assemble_report
from memberpulse.flows.reconcile._score import drift
from memberpulse.flows.reconcile._step_list import (
    COMPACT,
    DRIFT,
    INGEST,
    PUBLISH,
    RECORD,
    REPORT,
    SCORE,
    SNAPSHOT,
    RunMode,
)
from memberpulse.flows.reconcile._steps import (
    Logger,
    RunStart,
    compact_step,
    ingest_step,
    publish_step,
    record_step,
    score_step,
    snapshot_step,
)
from memberpulse.flows.reconcile._store import ReconcileStore
from memberpulse.flows.report import write_run_report
from memberpulse.flows.whop import snapshot_dirs
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
    warnings: Sequence[str] = (),
    logger: Logger = log,
) -> RunReport:
    """One run, the steps in the order of ``STEPS``; on failure the run is recorded as failed. ``warnings``:
    what the caller found before the run, for its report."""
    started = datetime.now(UTC)
    if as_of is not None:
        check_as_of_not_future(as_of, now=started)
    start = RunStart(
        run_id=str(uuid.uuid4()),
        as_of=(as_of or started).astimezone(UTC),
        started_at=started,
        full_refresh=full_refresh,
        data_dir=str(settings.data_dir.resolve()),
        publish_target=target_name(settings),
        test_webhooks_included=settings.include_test_webhooks,
        mode="dry-run" if dry_run else "run",  # placed against the last commit below
    )
    if start.publish_target is None:
        logger.info("no Supabase target configured (SUPABASE_DB_URL or SUPABASE_URL): publishing nowhere")
    store, done = ReconcileStore(settings.warehouse_dir), StepResults()
    with run_lock(settings.warehouse_dir, create=not dry_run):
        try:
            start = _placed(settings, start, store, explicit=as_of is not None, warnings=warnings)
            _run_steps(settings, start, store, done, logger)
        except BaseException as exc:
            done.finished_at = datetime.now(UTC)
            if isinstance(exc, Exception) and start.mode == "run":
                failed = assemble_report(start, done, error=str(exc))
                record_run(settings, failed.pipeline_run(), rejects=None, best_effort=True)
            raise
    return assemble_report(start, done)


def check_as_of_not_future(as_of: datetime, *, now: datetime) -> None:
    """An as-of later than now (beyond the clock-skew allowance) is refused before anything is read: scoring
    the future marks every member inactive, and committing it would put every later run behind it."""
    if as_of > now + CLOCK_SKEW_ALLOWANCE:
        raise ConfigError(
            f"--as-of {as_of.isoformat()} is in the future (now is {now.replace(microsecond=0).isoformat()})",
            hint="give a time up to now, or leave --as-of out to score as of now",
        )


def _placed(
    settings: Settings, start: RunStart, store: ReconcileStore, *, explicit: bool, warnings: Sequence[str]
) -> RunStart:
    """The run placed against the last commit: its as-of, its mode, and what a person should look at (a changed
    fold setting, then the caller's ``warnings``)."""
    last = store.last_as_of(tolerate_damage=start.full_refresh)
    as_of, last = _ordinary_as_of(start, last, explicit=explicit, manifest=store.manifest_path)
    behind = _clock_behind(start.as_of, as_of)
    changed = None if start.full_refresh else fold_settings_changed(settings, store.load_manifest())
    return dataclasses.replace(
        start,
        as_of=as_of,
        last_as_of=last,
        mode=_mode(as_of, last, dry_run=start.mode == "dry-run"),
        warnings=tuple(w for w in (behind, changed, *warnings) if w),
    )


def _clock_behind(now: datetime, as_of: datetime) -> str | None:
    """What to say when this run goes on as of a commit made under a clock ahead of this one."""
    if as_of - now <= CLOCK_SKEW_ALLOWANCE:
        return None
    return (
        f"this machine's clock ({now.replace(microsecond=0).isoformat()}) is {as_of - now} behind the last "
        f"commit (as of {as_of.isoformat()}): this run scores as of that commit, so it never goes back in time; "
        "check the hosts' clocks (NTP)"
    )


def _ordinary_as_of(
    start: RunStart, last: datetime | None, *, explicit: bool, manifest: Path
) -> tuple[datetime, datetime | None]:
    """The as-of of a run with no ``--as-of`` (and the last commit's as-of it is placed against): now, or the
    last commit's when that lies ahead of this clock by up to ``CLOCK_BEHIND_LIMIT`` (a host whose clock ran
    ahead), so an ordinary run never goes back in time and always ingests, commits and publishes.

    A last commit further ahead than that is damage (an older version that took a future ``--as-of``, a clock
    set years off): scoring as of it would mark everyone inactive, so the run stops with the remedy instead. A
    full refresh is that remedy: it rebuilds from the raw store as of now and replaces the future commit.
    """
    now = start.as_of
    if explicit or last is None or last <= now:
        return now, last
    if last <= now + CLOCK_BEHIND_LIMIT:  # another host's clock ahead: go on from its commit (said if > skew)
        return last, last
    if start.full_refresh:
        return now, None  # replaced by this run's commit
    raise CorruptState(
        f"{manifest}: the last committed reconcile run is as of {last.isoformat()}, later than this machine's "
        f"clock ({now.replace(microsecond=0).isoformat()}); every run would be behind it",
        path=str(manifest),
        hint="if this clock is right, run `memberpulse run --full-refresh` once: it rebuilds from the raw store "
        "as of now; otherwise fix the clock",
    )


def _mode(as_of: datetime, last_as_of: datetime | None, *, dry_run: bool) -> RunMode:
    """Looking back never overwrites the present: an as-of earlier than the last commit's commits nothing."""
    if dry_run:
        return "dry-run"
    return "backdated" if last_as_of is not None and as_of < last_as_of else "run"


def _run_steps(settings: Settings, start: RunStart, store: ReconcileStore, done: StepResults, logger: Logger) -> None:
    """The steps, each taken only in the modes ``STEPS`` gives it; ``done`` gets each step's value."""
    mode = start.mode
    done.ingested = ingested = done.timed(INGEST, mode, ingest_step, settings, store, start, logger)
    checkpoint("after_ingest")
    done.scored = scored = done.timed(SCORE, mode, score_step, settings, store, start, ingested)
    done.published = published = done.timed(PUBLISH, mode, publish_step, settings, start, scored, ingested, logger)
    done.drift = drift_frame = done.timed(DRIFT, mode, drift, settings, ingested.state)
    done.finished_at = datetime.now(UTC)
    # The snapshot carries this run's rows as they will be recorded; the run logs and the target hear of the run
    # only after the snapshot is in place, so no record says "completed" while an output is missing.
    report = assemble_report(start, done)
    run = report.pipeline_run()
    companies = run_companies_with(settings.warehouse_dir, start.run_id, start.started_at, report.companies)
    if mode in SNAPSHOT.modes:
        done.snapshot = done.timed(
            SNAPSHOT, mode, snapshot_step, settings, start, store, ingested, published,
            drift=drift_frame, run=run, run_companies=companies,
        )  # fmt: skip
        logger.info("snapshot written: %s", done.snapshot.path)
    if mode in REPORT.modes:
        done.analyst_report = done.timed(REPORT, mode, write_run_report, settings.snapshots_dir, logger)
    if mode in RECORD.modes:
        failure = published.failure
        done.timed(
            RECORD, mode, record_step, settings, run, companies,
            rejects=ingested.failures,
            best_effort=failure is not None,
            local_only=isinstance(failure, TransientError),  # the target is down: do not wait on it again
        )  # fmt: skip
    if mode in COMPACT.modes:
        done.compaction = done.timed(COMPACT, mode, compact_step, settings, store, logger)


def data_dir_unused(settings: Settings) -> str | None:
    """Why the data dir looks like one no one writes to, or None when something has: a landing started on
    it (``serve`` creates ``landing/`` at start), a webhook stored or refused, a backfill, a recovery. With the
    storage URL set the data dir is a cache, and a fresh worker's is empty by design: never unused."""
    if settings.storage is not None:
        return None
    in_use = (
        settings.landing_dir.is_dir()
        or settings.quarantine_dir.is_dir()
        or (settings.warehouse_dir / "recovery").is_dir()
        or bool(snapshot_dirs(settings.warehouse_dir))
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
