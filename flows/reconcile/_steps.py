"""The reconcile steps that fill in the run report as they go; each runs as a Prefect task in a flow run."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import polars as pl

from memberpulse.flows.publish import publish_members
from memberpulse.flows.reconcile._ingest import Ingested, ingest
from memberpulse.flows.reconcile._report import AT_RISK_LISTED, RunReport
from memberpulse.flows.snapshot import thin_history, write_snapshot
from memberpulse.flows.warehouse import ReconcileStore
from memberpulse.settings import Settings

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

    return {"ingest": {**TRANSIENT_RETRY, "retries": 2}, "publish": TRANSIENT_RETRY}.get(
        name, {"cache_policy": NO_CACHE}
    )


def ingest_step(settings: Settings, store: ReconcileStore, run_id: str, full_refresh: bool) -> Ingested:
    return ingest(settings, store, run_id=run_id, full_refresh=full_refresh)


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
    settings: Settings, report: RunReport, scored: pl.DataFrame, run_at: datetime, logger: Logger
) -> pl.DataFrame:
    """Step 3: publish the changed rows; returns the table as it now stands (for the snapshot)."""
    outcome = run_step("publish", publish_members, settings, scored, run_at=run_at)
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
    return outcome.as_published


def snapshot(
    settings: Settings,
    report: RunReport,
    store: ReconcileStore,
    ingested: Ingested,
    *,
    run_at: datetime,
    published: pl.DataFrame,
    drift: pl.DataFrame,
    runs: pl.DataFrame,
) -> None:
    """Step 4: a new DuckDB file swapped in as ``snapshots/latest.duckdb``."""
    path = run_step(
        "snapshot",
        write_snapshot,
        snapshots_dir=settings.snapshots_dir,
        run_id=report.run_id,
        run_at=run_at,
        member_activity=published,
        events_parquet=store.event_paths(ingested.manifest),
        history_parquet=thin_history(store.history_paths()),
        drift=drift,
        pipeline_runs=runs,
        keep=settings.snapshots_keep,
    )
    report.snapshot_path = str(path)
