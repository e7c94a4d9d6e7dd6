"""The reconcile steps that fill in the run report as they go; each runs as a Prefect task in a flow run."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import polars as pl
import pyarrow as pa

from memberpulse.contracts.times import file_time
from memberpulse.errors import MemberpulseError
from memberpulse.flows.publish import (
    ChangeHints,
    PublishOutcome,
    failures_with,
    plan_publish,
    preview_publish,
    publish_members,
    publish_state,
)
from memberpulse.flows.raw.archive import compact
from memberpulse.flows.reconcile._ingest import Ingested, all_events, ingest
from memberpulse.flows.reconcile._report import AT_RISK_LISTED, RunReport
from memberpulse.flows.reconcile._store import ReconcileStore
from memberpulse.flows.recover import RecoveryStore
from memberpulse.flows.snapshot import SnapshotLineage, read_build_record, thin_history, whop_access, write_snapshot
from memberpulse.flows.whop import latest_snapshot, list_snapshots
from memberpulse.settings import Settings

BACKDATED_DIR = "as-of"  # backdated runs' snapshots, beside (never instead of) latest.duckdb
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
P = ParamSpec("P")
R = TypeVar("R")
_TASKS: dict[str, Any] = {}


def run_step(name: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Inside a Prefect flow run, ``fn`` runs as the Prefect task ``name`` (tracked, retried per
    :func:`_task_options`); outside one (the CLI's one-off ``memberpulse run``) it is a plain call, and
    Prefect is not even imported: no temporary API server starts, so none can outlive the CLI."""
    context = sys.modules.get("prefect.context")
    if context is None or context.FlowRunContext.get() is None:
        return fn(*args, **kwargs)
    if name not in _TASKS:
        from prefect import task

        _TASKS[name] = task(name=name, **_task_options(name))(fn)
    result: R = _TASKS[name](*args, **kwargs)
    return result


def _task_options(name: str) -> dict[str, Any]:
    from prefect.cache_policies import NO_CACHE

    from memberpulse.flows.retry_policy import TRANSIENT_RETRY

    # No Prefect retries for publish: the publisher retries transient failures itself
    # (MEMBERPULSE_PUBLISH_MAX_ATTEMPTS), and retrying its final failure again would multiply its attempts.
    return {"ingest": {**TRANSIENT_RETRY, "retries": 2}, "publish": {**TRANSIENT_RETRY, "retries": 0}}.get(
        name, {"cache_policy": NO_CACHE}
    )


def ingest_step(settings: Settings, store: ReconcileStore, report: RunReport) -> Ingested:
    """Step 1; only a normal run commits (a dry or backdated run reads and folds in memory)."""
    return ingest(
        settings,
        store,
        run_id=report.run_id,
        full_refresh=report.full_refresh,
        as_of=report.as_of,
        commit=report.mode == "run",
    )


def note_ingested(report: RunReport, ingested: Ingested, logger: Logger) -> None:
    report.records_read = ingested.records_read
    report.events_ingested = ingested.events_ingested
    report.rejects = len(ingested.rejects)
    report.landing_rejections = len(ingested.landing_rejections)
    report.unknown_events = ingested.unknown_events
    report.test_webhooks = ingested.test_webhooks
    logger.info(
        "ingested %d events (%d raw records, %d rejects, %d unknown types), %d backfill snapshot(s)",
        report.events_ingested,
        report.records_read,
        report.rejects,
        report.unknown_events,
        len(ingested.backfills_folded),
    )


def note_scored(report: RunReport, scored: pl.DataFrame) -> None:
    report.members = len(scored)
    report.members_by_status = {
        row["status"]: row["len"] for row in scored.group_by("status").len().iter_rows(named=True)
    }


def publish(
    settings: Settings,
    report: RunReport,
    scored: pl.DataFrame,
    run_at: datetime,
    logger: Logger,
    hints: ChangeHints | None = None,
) -> tuple[pl.DataFrame, MemberpulseError | None, PublishOutcome | None]:
    """Step 3: publish the changed rows; returns the table as it now stands (for the snapshot), the error if
    the publish failed, and the publish's outcome when it published (what the snapshot may update from).

    A dry run only counts what it would send; a backdated run sends nothing (its snapshot holds its own
    rows). A failed publish is noted in the report, not raised: the snapshot is an output of its own and
    still gets this run's rows (as they will stand once published), while the target's published state stays
    put, so the next run sends the same rows again.
    """
    if report.mode == "dry-run":
        preview = preview_publish(settings, scored, run_at=run_at)
        report.would_publish = preview.changes
        return _note_published(report, preview), None, None
    if report.mode == "backdated":
        return plan_publish(scored, None, run_at=run_at).published, None, None
    try:
        outcome = run_step("publish", publish_members, settings, scored, run_at=run_at, hints=hints)
    except MemberpulseError as exc:
        report.publish_error = exc.message
        logger.info("publishing failed (%s); writing the snapshot all the same", exc.message)
        return _note_published(report, preview_publish(settings, scored, run_at=run_at), counts=False), exc, None
    _note_published(report, outcome)
    logger.info(
        "published to %s: %d inserted, %d updated, %d unchanged",
        report.publish_target or "nowhere",
        report.inserted,
        report.updated,
        report.unchanged,
    )
    return outcome.as_published, None, outcome


def _note_published(report: RunReport, outcome: PublishOutcome, *, counts: bool = True) -> pl.DataFrame:
    if counts:
        report.inserted = outcome.result.inserted
        report.updated = outcome.result.updated
        report.unchanged = outcome.result.unchanged
    report.newly_at_risk_count = len(outcome.newly_at_risk)
    report.newly_at_risk = outcome.newly_at_risk[:AT_RISK_LISTED]
    return outcome.as_published


def snapshot(
    settings: Settings,
    report: RunReport,
    store: ReconcileStore,
    ingested: Ingested,
    *,
    run_at: datetime,
    published: pl.DataFrame,
    outcome: PublishOutcome | None,
    drift: pl.DataFrame,
    runs: pl.DataFrame,
) -> None:
    """Step 5: a new DuckDB file swapped in as ``snapshots/latest.duckdb`` (the previous one plus this run's
    changes when it matches what this run started from); for a backdated run, a file of its own named for its
    as-of (``snapshots/as-of/<as_of>.duckdb``), with the history up to that time."""
    deliveries = note_delivery_health(settings, report)
    backdated = report.mode == "backdated"
    history = store.history_paths()
    if backdated:
        history = [p for p in history if p.stem <= file_time(report.as_of)]
    path = run_step(
        "snapshot",
        write_snapshot,
        snapshots_dir=settings.snapshots_dir / BACKDATED_DIR if backdated else settings.snapshots_dir,
        run_id=report.run_id,
        run_at=run_at,
        member_activity=published,
        # A backdated run's new events are in memory only; a committing run's are in the event log's files.
        **(
            {"events": all_events(store, ingested)}
            if backdated
            else {"events_parquet": store.event_paths(ingested.manifest)}
        ),
        history_parquet=thin_history(history),
        drift=drift,
        pipeline_runs=runs,
        keep=settings.snapshots_keep,
        whop_access=lambda: whop_access(settings.warehouse_dir),
        own_file=f"{file_time(report.as_of)}.duckdb" if backdated else None,
        webhook_failures=failures_with(settings, ingested.failures, seen_at=report.started_at),
        webhook_deliveries=deliveries,
        lineage=None if backdated or outcome is None else _lineage(settings, report, ingested, outcome),
    )
    report.snapshot_path = str(path)


def _lineage(settings: Settings, report: RunReport, ingested: Ingested, outcome: PublishOutcome) -> SnapshotLineage:
    """What changed since the run before: lets the snapshot writer update a copy of the previous file."""
    backfill = latest_snapshot(settings.warehouse_dir)
    return SnapshotLineage(
        events_token_before=ingested.token_before,
        events_token=ingested.manifest.change_token,
        new_events=ingested.new_events,
        members_version_before=outcome.version_before,
        members_version=outcome.version_after,
        changed_members=outcome.result.changed_keys,
        whop_access_source=str(backfill.path) if backfill is not None else None,
        full=report.full_refresh,
    )


def compact_raw_history(settings: Settings, store: ReconcileStore, logger: Logger) -> None:
    """Step 5: landing segments past the retention window into the daily raw archive (after the commit, under
    the run lock, so only what a committed manifest has read to the end can go). Housekeeping: a failure is
    logged, never fails a run whose outputs are written; the next run tries again."""
    try:
        result = compact(
            settings.landing_dir, store.load_manifest().offsets, retention_days=settings.raw_retention_days
        )
    except (OSError, pa.ArrowException) as exc:
        logger.warning("raw history compaction failed (retried next run): %s", exc)
        return
    if result.segments:
        logger.info(
            "compacted %d raw segment(s), %d bytes, into the archive for %s",
            result.segments,
            result.bytes,
            ", ".join(result.days),
        )


def check_state_readable(settings: Settings, store: ReconcileStore, *, full_refresh: bool) -> None:
    """Read every state document a run reads, and the member state's footer, before any work: a damaged one
    stops the run with CorruptState naming it and its remedy while nothing is done yet. A full refresh
    rebuilds the reconcile state and the snapshot from scratch, so it reads neither's."""
    if not full_refresh:
        store.check_readable()
        read_build_record(settings.snapshots_dir)
    publish_state(settings).load_meta()
    RecoveryStore(settings.warehouse_dir, settings.landing_dir, settings.quarantine_dir).load_state()
    list_snapshots(settings.warehouse_dir)  # every backfill's _SUCCESS


def note_delivery_health(settings: Settings, report: RunReport) -> pl.DataFrame | None:
    """Whop's side of delivery, as the last recovery read it (None when recovery never ran)."""
    recovery = RecoveryStore(settings.warehouse_dir, settings.landing_dir, settings.quarantine_dir)
    state = recovery.load_state()
    if state.recovered_at is None:
        return None
    report.whop_failed_deliveries = state.failed_attempts
    report.whop_unlogged_failures = state.unlogged_failures
    report.whop_unlogged_messages = state.unlogged_messages
    return recovery.deliveries()
