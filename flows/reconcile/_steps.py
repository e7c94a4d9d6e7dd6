"""The reconcile flow's Prefect tasks, and the steps that fill in the run report as they go."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from memberpulse.flows.publish import ChangeHints, PublishOutcome, publish_members
from memberpulse.flows.reconcile._ingest import Ingested, ingest
from memberpulse.flows.reconcile._report import AT_RISK_LISTED, RunReport
from memberpulse.flows.retry_policy import TRANSIENT_RETRY
from memberpulse.flows.snapshot import SnapshotLineage, thin_history, whop_access, write_snapshot
from memberpulse.flows.warehouse import ReconcileStore
from memberpulse.flows.whop import latest_snapshot
from memberpulse.settings import Settings

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


@task(name="ingest", **{**TRANSIENT_RETRY, "retries": 2})
def ingest_task(settings: Settings, store: ReconcileStore, run_id: str, full_refresh: bool) -> Ingested:
    return ingest(settings, store, run_id=run_id, full_refresh=full_refresh)


@task(name="publish", **TRANSIENT_RETRY)
def publish_task(
    settings: Settings, scored: pl.DataFrame, run_at: datetime, hints: ChangeHints | None = None
) -> PublishOutcome:
    return publish_members(settings, scored, run_at=run_at, hints=hints)


@task(name="snapshot", cache_policy=NO_CACHE)
def snapshot_task(**kwargs: Any) -> Path:
    return write_snapshot(**kwargs)


def note_ingested(report: RunReport, ingested: Ingested, logger: Logger) -> None:
    report.records_read = ingested.records_read
    report.events_ingested = ingested.events_ingested
    report.rejects = len(ingested.rejects)
    report.landing_rejections = len(ingested.landing_rejections)
    report.unknown_events = ingested.unknown_events
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
) -> PublishOutcome:
    """Step 3: publish the changed rows; the outcome holds the table as it now stands (for the snapshot)."""
    outcome = publish_task(settings, scored, run_at, hints)
    report.inserted = outcome.result.inserted
    report.updated = outcome.result.updated
    report.unchanged = outcome.result.unchanged
    report.newly_at_risk_count = len(outcome.newly_at_risk)
    report.newly_at_risk = outcome.newly_at_risk[:AT_RISK_LISTED]
    logger.info(
        "published to %s: %d inserted, %d updated, %d unchanged",
        report.publish_target or "nowhere",
        report.inserted,
        report.updated,
        report.unchanged,
    )
    return outcome


def snapshot(
    settings: Settings,
    report: RunReport,
    store: ReconcileStore,
    ingested: Ingested,
    *,
    run_at: datetime,
    published: PublishOutcome,
    drift: pl.DataFrame,
    runs: pl.DataFrame,
) -> None:
    """Step 4: a new DuckDB file swapped in as ``snapshots/latest.duckdb`` — the previous one plus this run's
    changes when it matches what this run started from, otherwise built from all history."""
    backfill = latest_snapshot(settings.warehouse_dir)
    lineage = SnapshotLineage(
        events_token_before=ingested.token_before,
        events_token=ingested.manifest.change_token,
        new_events=ingested.new_events,
        members_version_before=published.version_before,
        members_version=published.version_after,
        changed_members=published.result.changed_keys,
        whop_access_source=str(backfill.path) if backfill is not None else None,
        full=report.full_refresh,
    )
    path = snapshot_task(
        snapshots_dir=settings.snapshots_dir,
        run_id=report.run_id,
        run_at=run_at,
        member_activity=published.as_published,
        events_parquet=store.event_paths(ingested.manifest),
        history_parquet=thin_history(store.history_paths()),
        drift=drift,
        pipeline_runs=runs,
        keep=settings.snapshots_keep,
        whop_access=lambda: whop_access(settings.warehouse_dir),
        lineage=lineage,
    )
    report.snapshot_path = str(path)
