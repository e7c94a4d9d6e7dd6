"""The reconcile steps (``_step_list.STEPS``), each a function that returns what it produced; the flow
(``_flow``) runs them in order and assembles the run report from their values (``_report``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import polars as pl
import pyarrow as pa

from memberpulse.contracts.times import file_time
from memberpulse.errors import MemberpulseError
from memberpulse.flows.publish import (
    PipelineRun,
    PublishOutcome,
    PublishResult,
    failures_with,
    plan_publish,
    preview_publish,
    publish_members,
    publish_state,
    record_run,
    runs_with,
)
from memberpulse.flows.raw.archive import CompactionResult, compact
from memberpulse.flows.reconcile._companies import record_run_companies
from memberpulse.flows.reconcile._ingest import Ingested, all_events, ingest, scoring_state
from memberpulse.flows.reconcile._score import change_hints, score
from memberpulse.flows.reconcile._step_list import INGEST, PUBLISH, SNAPSHOT, RunMode, Step
from memberpulse.flows.reconcile._store import ReconcileStore
from memberpulse.flows.recover import RecoveryState, RecoveryStore
from memberpulse.flows.snapshot import SnapshotLineage, read_build_record, thin_history, whop_access, write_snapshot
from memberpulse.flows.whop import latest_snapshots, list_snapshots, snapshots_token
from memberpulse.settings import Settings
from memberpulse.storage import open_store

BACKDATED_DIR = "as-of"  # backdated runs' snapshots, beside (never instead of) latest.duckdb
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
P = ParamSpec("P")
R = TypeVar("R")
_TASKS: dict[str, Any] = {}


@dataclass(frozen=True)
class RunStart:
    """What a run knows before its first step: who it is, as of when, and in which mode."""

    run_id: str
    as_of: datetime
    started_at: datetime  # also the run's ``run_at``: the ``updated_at`` of the rows it changes
    full_refresh: bool
    data_dir: str  # absolute
    publish_target: str | None  # safe to print; None: publishing nowhere
    test_webhooks_included: bool
    mode: RunMode = "run"
    last_as_of: datetime | None = None  # the last committed run's as-of
    warnings: tuple[str, ...] = ()  # what a person should look at although the run completes


@dataclass(frozen=True)
class Scored:
    """The score step's result: every member as of the run's as-of, and the state they were scored from."""

    state: pl.DataFrame  # the committed state, or a rebuild for a backdated as-of
    members: pl.DataFrame

    def by_status(self) -> dict[str, int]:
        return {row["status"]: row["len"] for row in self.members.group_by("status").len().iter_rows(named=True)}


@dataclass(frozen=True)
class Published:
    """The publish step's result. ``table``: member_activity as it stands once published (the snapshot's).
    ``result``: what the target did, or a dry run would do (None: nothing was sent). ``failure``: the publish
    failed, noted rather than raised, so the snapshot still gets this run's rows."""

    table: pl.DataFrame
    result: PublishResult | None = None
    newly_at_risk: list[dict[str, Any]] = field(default_factory=list)  # every one of them
    outcome: PublishOutcome | None = None  # when it published: what the snapshot may update from
    would_publish: pl.DataFrame | None = None  # a dry run's rows, ``action`` first
    failure: MemberpulseError | None = None


@dataclass(frozen=True)
class Snapshotted:
    """The snapshot step's result: the file written, and Whop's side of delivery it shows (None: recovery
    never ran)."""

    path: str
    delivery_health: RecoveryState | None


def run_step(step: Step, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Inside a Prefect flow run, ``fn`` runs as the Prefect task named for ``step`` (tracked, retried per
    its ``task_retries``); outside one (the CLI's one-off ``memberpulse run``) it is a plain call, and Prefect
    is not even imported: no temporary API server starts, so none can outlive the CLI."""
    context = sys.modules.get("prefect.context")
    if step.task_retries is None or context is None or context.FlowRunContext.get() is None:
        return fn(*args, **kwargs)
    if step.name not in _TASKS:
        from prefect import task

        from memberpulse.flows.retry_policy import TRANSIENT_RETRY

        _TASKS[step.name] = task(name=step.name, **{**TRANSIENT_RETRY, "retries": step.task_retries})(fn)
    result: R = _TASKS[step.name](*args, **kwargs)
    return result


def ingest_step(settings: Settings, store: ReconcileStore, start: RunStart, logger: Logger) -> Ingested:
    """Only a committing run commits (a dry or backdated run reads and folds in memory)."""
    ingested = run_step(
        INGEST,
        ingest,
        settings,
        store,
        run_id=start.run_id,
        full_refresh=start.full_refresh,
        as_of=start.as_of,
        commit=start.mode == "run",
    )
    logger.info(
        "ingested %d events (%d raw records, %d rejects, %d unknown types), %d backfill snapshot(s)",
        ingested.events_ingested,
        ingested.records_read,
        len(ingested.rejects),
        ingested.unknown_events,
        len(ingested.backfills_folded),
    )
    return ingested


def score_step(settings: Settings, store: ReconcileStore, start: RunStart, ingested: Ingested) -> Scored:
    """Score every member; a committing run keeps the scores as history (what the snapshot's history reads)."""
    state = scoring_state(settings, store, ingested, start.as_of)
    scored = Scored(state=state, members=score(settings, state, start.as_of))
    if start.mode == "run":
        if start.full_refresh:  # history of a commit dated after this one (made under a clock ahead) goes
            store.drop_history_after(start.as_of)
        store.write_history(start.as_of, scored.members, state_changed=ingested.changed)
    return scored


def publish_step(settings: Settings, start: RunStart, scored: Scored, ingested: Ingested, logger: Logger) -> Published:
    """Publish the changed rows. A dry run only counts what it would send; a backdated run sends nothing (its
    snapshot holds its own rows). A failed publish is noted in the result, not raised: the snapshot is an
    output of its own and still gets this run's rows (as they will stand once published), while the target's
    published state stays put, so the next run sends the same rows again."""
    run_at, members = start.started_at, scored.members
    if start.mode == "dry-run":
        preview = preview_publish(settings, members, run_at=run_at)
        return Published(preview.as_published, preview.result, preview.newly_at_risk, would_publish=preview.changes)
    if start.mode == "backdated":
        return Published(plan_publish(members, None, run_at=run_at).published)
    hints = change_hints(settings, scored.state, ingested, start.as_of)
    try:
        outcome = run_step(PUBLISH, publish_members, settings, members, run_at=run_at, hints=hints)
    except MemberpulseError as exc:
        logger.info("publishing failed (%s); writing the snapshot all the same", exc.message)
        preview = preview_publish(settings, members, run_at=run_at)
        return Published(preview.as_published, None, preview.newly_at_risk, failure=exc)
    result = outcome.result
    logger.info(
        "published to %s: %d inserted, %d updated, %d unchanged",
        start.publish_target or "nowhere",
        result.inserted,
        result.updated,
        result.unchanged,
    )
    return Published(outcome.as_published, result, outcome.newly_at_risk, outcome=outcome)


def snapshot_step(
    settings: Settings,
    start: RunStart,
    store: ReconcileStore,
    ingested: Ingested,
    published: Published,
    *,
    drift: pl.DataFrame,
    run: PipelineRun,
    run_companies: pl.DataFrame | None = None,
) -> Snapshotted:
    """A new DuckDB file swapped in as ``snapshots/latest.duckdb`` (the previous one plus this run's changes
    when it matches what this run started from); for a backdated run, a file of its own named for its as-of
    (``snapshots/as-of/<as_of>.duckdb``), with the history up to that time. ``run`` is this run's
    ``pipeline_runs`` row as it will be recorded, ``run_companies`` the per-company run log with its lines."""
    recovery = RecoveryStore(settings.warehouse_dir, settings.landing_dir, settings.quarantine_dir)
    health = recovery.load_state()
    health_known = health.recovered_at is not None
    backdated = start.mode == "backdated"
    history = store.history_paths()
    if backdated:
        history = [p for p in history if p.stem <= file_time(start.as_of)]
    outcome = published.outcome
    path = run_step(
        SNAPSHOT,
        write_snapshot,
        snapshots_dir=settings.snapshots_dir / BACKDATED_DIR if backdated else settings.snapshots_dir,
        run_id=start.run_id,
        run_at=start.started_at,
        member_activity=published.table,
        # A backdated run's new events are in memory only; a committing run's are in the event log's files.
        **(
            {"events": all_events(store, ingested)}
            if backdated
            else {"events_parquet": store.event_paths(ingested.manifest)}
        ),
        history_parquet=thin_history(history),
        drift=drift,
        pipeline_runs=runs_with(settings, run),
        pipeline_run_companies=run_companies,
        keep=settings.snapshots_keep,
        whop_access=lambda: whop_access(settings.warehouse_dir),
        own_file=f"{file_time(start.as_of)}.duckdb" if backdated else None,
        webhook_failures=failures_with(settings, ingested.failures, seen_at=start.started_at),
        webhook_deliveries=recovery.deliveries() if health_known else None,
        lineage=None if backdated or outcome is None else _lineage(settings, start, ingested, outcome),
    )
    return Snapshotted(path=str(path), delivery_health=health if health_known else None)


def _lineage(settings: Settings, start: RunStart, ingested: Ingested, outcome: PublishOutcome) -> SnapshotLineage:
    """What changed since the run before: lets the snapshot writer update a copy of the previous file."""
    backfills = snapshots_token(latest_snapshots(settings.warehouse_dir))
    return SnapshotLineage(
        events_token_before=ingested.token_before,
        events_token=ingested.manifest.change_token,
        new_events=ingested.new_events,
        members_version_before=outcome.version_before,
        members_version=outcome.version_after,
        changed_members=outcome.result.changed_keys,
        whop_access_source=backfills,
        full=start.full_refresh,
    )


def record_step(
    settings: Settings,
    run: PipelineRun,
    run_companies: pl.DataFrame,
    *,
    rejects: pl.DataFrame,
    best_effort: bool,
    local_only: bool,
) -> pl.DataFrame:
    """Record the run: its per-company lines in the warehouse first (they describe what was committed), then
    its row in the run log and the target (``publish.record_run``), which says it completed."""
    record_run_companies(settings.warehouse_dir, run_companies)
    return record_run(settings, run, rejects=rejects, best_effort=best_effort, local_only=local_only)


def compact_step(settings: Settings, store: ReconcileStore, logger: Logger) -> CompactionResult | None:
    """Landing segments past the retention window into the daily raw archive (after the commit, under the run
    lock, so only what a committed manifest has read to the end, and whose bytes are still the ones it read, can
    go). Housekeeping: a failure is logged (None), never fails a run whose outputs are written; the next run
    tries again. A segment changed after ingestion is a warning in the result, for the run's report."""
    committed = store.load_manifest()
    try:
        result = compact(
            settings.landing_dir,
            committed.offsets,
            committed.checksums,
            retention_days=settings.raw_retention_days,
            remote=open_store(settings),
        )
    except (OSError, pa.ArrowException, MemberpulseError) as exc:  # a store outage too: retried next run
        logger.warning("raw history compaction failed (retried next run): %s", exc)
        return None
    if result.segments:
        logger.info(
            "compacted %d raw segment(s), %d bytes, into the archive for %s",
            result.segments,
            result.bytes,
            ", ".join(result.days),
        )
    return result


def check_state_readable(settings: Settings, store: ReconcileStore, *, full_refresh: bool) -> None:
    """Read every state document a run reads, and the member state's footer, before any work: a damaged one
    stops the run with CorruptState naming it and its remedy while nothing is done yet. A full refresh
    rebuilds the reconcile state and the snapshot from scratch, so it reads neither's."""
    if not full_refresh:
        store.check_readable()
        read_build_record(settings.snapshots_dir)
    publish_state(settings).load_meta()
    RecoveryStore(settings.warehouse_dir, settings.landing_dir, settings.quarantine_dir).load_state()
    # The backfill manifests a run reads: each company's latest, and those not folded yet.
    latest_snapshots(settings.warehouse_dir)
    folded = set() if full_refresh else set(store.load_manifest().backfills_folded)
    list_snapshots(settings.warehouse_dir, leaving_out=folded)
