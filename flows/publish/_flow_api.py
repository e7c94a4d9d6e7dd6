"""The calls the reconcile flow makes, settings in, plain results out; each opens and closes its publisher.

``publish_members`` also runs with no Supabase target configured: nothing is sent, but the rows are stamped
against a snapshot-only state (``warehouse/published/member_activity.snapshot-only.parquet``) so the DuckDB
snapshot's ``updated_at`` still means "when this row's data last changed". That file is separate from the
target's state on purpose: configuring a target later publishes everything.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import polars as pl

from memberpulse.contracts.tables import PIPELINE_RUNS, WEBHOOK_FAILURES
from memberpulse.contracts.times import UTC_US
from memberpulse.errors import MemberpulseError
from memberpulse.flows.fsio import atomic_write_parquet, read_parquet_checked
from memberpulse.flows.publish._base import PipelineRun, Publisher, PublishResult
from memberpulse.flows.publish._dsn import mask_dsn
from memberpulse.flows.publish._schema import (
    BODY_PREFIX_CHARS,
    KEY,
    MEMBER_ACTIVITY_SCHEMA,
    PIPELINE_RUN_COLUMNS,
    WEBHOOK_FAILURE_COLUMNS,
    summarise_webhook_failures,
)
from memberpulse.flows.publish._text import storable_members, storable_text
from memberpulse.flows.publish.changes import PublishedState, plan_publish
from memberpulse.settings import Settings

log = logging.getLogger(__name__)
SNAPSHOT_ONLY_STATE: Final = "member_activity.snapshot-only"
RUNS_LOG: Final = "pipeline_runs"
FAILURES_LOG: Final = "webhook_failures"
PIPELINE_RUNS_SCHEMA: Final[dict[str, pl.DataType]] = dict(PIPELINE_RUNS.schema)


@dataclass(frozen=True)
class PublishOutcome:
    """``result``: what the target did. ``as_published``: the whole member_activity table with the
    ``updated_at`` values the target holds (for the snapshot). ``newly_at_risk``: members whose status became
    at_risk in this run (JSON-ready dicts)."""

    result: PublishResult
    as_published: pl.DataFrame
    newly_at_risk: list[dict[str, Any]] = field(default_factory=list)


def target_name(settings: Settings) -> str | None:
    """Where rows are published, safe to print (no password, no key); None when nowhere."""
    if settings.publish_target == "postgres" and settings.supabase_db_url is not None:
        return f"Postgres {mask_dsn(settings.supabase_db_url.get_secret_value())}"
    if settings.publish_target == "postgrest" and settings.supabase_url:
        return f"PostgREST {settings.supabase_url.rstrip('/')}/rest/v1"
    return None


def newly_at_risk(current: pl.DataFrame, last: pl.DataFrame | None) -> list[dict[str, Any]]:
    """Members at_risk now that were not at_risk (or not there) in the last published rows."""
    now = current.filter(pl.col("status") == "at_risk")
    if last is not None and last.height:
        before = last.select(pl.col(KEY), pl.col("status").alias("__status_before"))
        now = now.join(before, on=KEY, how="left").filter(pl.col("__status_before").ne_missing("at_risk"))
    cols = [c for c in ("membership_id", "member_name", "email", "engagement_score", "last_active") if c in now.columns]
    frame = now.select(cols).sort(KEY)
    return frame.with_columns(pl.col(pl.Datetime).dt.to_string("%Y-%m-%dT%H:%M:%S%.6f+00:00")).to_dicts()


def _empty_members() -> pl.DataFrame:
    return pl.DataFrame(schema=MEMBER_ACTIVITY_SCHEMA)


def publish_members(settings: Settings, scored: pl.DataFrame, *, run_at: datetime) -> PublishOutcome:
    """Publish the changed rows of ``scored`` to the configured target (or nowhere) — see the module doc."""
    scored = storable_members(scored, KEY)  # the target and the snapshot get the same, storable text
    publisher = get_publisher(settings)
    if publisher is None:
        state = PublishedState(settings.warehouse_dir, name=SNAPSHOT_ONLY_STATE)
        last = state.load()
        plan = plan_publish(scored, last, run_at=run_at)
        if plan.changed.height or last is None:
            state.save(plan.published)
        published = plan.published if plan.changed.height or last is None else last
        return PublishOutcome(PublishResult(unchanged=scored.height), published, newly_at_risk(scored, last))
    with publisher:
        last = publisher.state.load()
        result = publisher.publish_members(scored, run_at=run_at)
    published = result.published if result.published is not None else _empty_members()
    return PublishOutcome(result, published, newly_at_risk(scored, last))


def failures_from_rejects(rejects: pl.DataFrame, *, seen_at: datetime | None = None) -> pl.DataFrame:
    """The reconcile flow's rejects (transforms.REJECT_SCHEMA) as webhook_failures input rows.

    A reject without a webhook id (an unreadable line) is keyed by the sha256 of its body excerpt, as the
    landing keys legacy webhooks, and its reason names the segment and byte offset where it lies (two equal
    garbage lines in different places stay two rows). A reject whose received_at is missing or unreadable is
    dated ``seen_at`` (the run that found it); without ``seen_at`` such a row is dropped.
    """
    if rejects.height == 0:
        return pl.DataFrame(schema={"webhook_id": pl.Utf8, "event_type": pl.Utf8, "reason": pl.Utf8,
                                    "received_at": UTC_US, "body_prefix": pl.Utf8})  # fmt: skip
    body = pl.col("body") if "body" in rejects.columns else pl.lit(None, pl.Utf8)
    received = pl.col("received_at")
    if rejects.schema.get("received_at") == pl.Utf8:
        received = received.str.to_datetime(time_zone="UTC", strict=False, time_unit="us")
    frame = rejects.select(
        pl.col("webhook_id").cast(pl.Utf8) if "webhook_id" in rejects.columns else pl.lit(None, pl.Utf8),
        (pl.col("event_type") if "event_type" in rejects.columns else pl.lit(None)).cast(pl.Utf8),
        _located_reason(rejects),
        pl.coalesce(received.cast(UTC_US), pl.lit(seen_at, UTC_US)).alias("received_at"),
        body.cast(pl.Utf8).str.slice(0, BODY_PREFIX_CHARS).alias("body_prefix"),
        body.cast(pl.Utf8).alias("__body"),
    )
    frame = frame.with_columns(
        pl.when(pl.col("webhook_id").is_null())
        .then(pl.col("__body").map_elements(_sha256, return_dtype=pl.Utf8))
        .otherwise(pl.col("webhook_id"))
        .alias("webhook_id")
    )
    frame = frame.drop("__body").filter(pl.col("received_at").is_not_null() & pl.col("reason").is_not_null())
    return storable_text(frame)  # anyone can put a NUL in a refused body


def _located_reason(rejects: pl.DataFrame) -> pl.Expr:
    """``reason``, plus ``(<segment> byte <offset>)`` for a line that carried no webhook id."""
    reason = pl.col("reason").cast(pl.Utf8)
    if not {"webhook_id", "source_file", "source_offset"} <= set(rejects.columns):
        return reason.alias("reason")
    where = pl.format(" ({} byte {})", pl.col("source_file"), pl.col("source_offset"))
    located = pl.col("webhook_id").is_null() & pl.col("source_file").is_not_null()
    return pl.when(located).then(reason + where).otherwise(reason).alias("reason")


def _sha256(text: str | None) -> str:
    return hashlib.sha256((text or "").encode()).hexdigest()


def record_run(
    settings: Settings,
    run: PipelineRun,
    *,
    rejects: pl.DataFrame | None = None,
    best_effort: bool = False,
    local_only: bool = False,
) -> pl.DataFrame:
    """Record ``run`` (and the run's rejects as webhook_failures) in the target, and in the warehouse's own
    run log; return every run in that log (for the snapshot's pipeline_runs table).

    ``best_effort``: a target error is logged, not raised (for recording a run that already failed).
    ``local_only``: the run log only (the target just failed; trying it again would only wait).
    """
    runs = runs_with(settings, run)
    atomic_write_parquet(runs, PublishedState(settings.warehouse_dir, name=RUNS_LOG).path)
    failures = failures_from_rejects(rejects, seen_at=run.started_at) if rejects is not None else None
    if rejects is not None:
        atomic_write_parquet(failures_with(settings, rejects, seen_at=run.started_at), _failures_log_path(settings))
    # Recording a run that already failed gets one attempt: the run's outcome is decided, its exit not delayed.
    publisher = None if local_only else get_publisher(settings, max_attempts=1 if best_effort else None)
    if publisher is None:
        return runs
    try:
        with publisher:
            publisher.record_run(run)
            if failures is not None and failures.height:
                publisher.record_failures(failures)
    except MemberpulseError as exc:
        if not best_effort:
            raise
        log.warning("could not record run %s in %s: %s", run.run_id, publisher.describe(), exc)
    return runs


def runs_with(settings: Settings, run: PipelineRun) -> pl.DataFrame:
    """The warehouse's run log with ``run`` in place (by run_id), sorted by start; writes nothing."""
    path = PublishedState(settings.warehouse_dir, name=RUNS_LOG).path
    row = pl.DataFrame([run.as_row()], schema=PIPELINE_RUNS_SCHEMA)
    hint = "delete it: only the earlier runs' rows in the snapshot's pipeline_runs table are lost"
    previous = read_parquet_checked(path, what="the run log", hint=hint) if path.exists() else None
    runs = row if previous is None else pl.concat([previous.filter(pl.col("run_id") != run.run_id), row])
    return runs.sort("started_at").select(PIPELINE_RUN_COLUMNS)


def preview_publish(settings: Settings, scored: pl.DataFrame, *, run_at: datetime) -> PublishOutcome:
    """What :func:`publish_members` would do now, changing nothing and contacting no one: the rows it would
    insert / update against the last published state, and the table as it would then stand."""
    publisher = get_publisher(settings)
    if publisher is None:
        last = PublishedState(settings.warehouse_dir, name=SNAPSHOT_ONLY_STATE).load()
    else:
        with publisher:
            last = publisher.state.load()
    plan = plan_publish(scored, last, run_at=run_at)
    changed, seen = plan.changed.height, plan.seen_before
    result = PublishResult(changed - seen, seen, plan.marked.height - changed, published=plan.published)
    return PublishOutcome(result, plan.published, newly_at_risk(scored, last))


def failures_with(settings: Settings, rejects: pl.DataFrame, *, seen_at: datetime) -> pl.DataFrame:
    """The warehouse's own webhook_failures table (the snapshot's copy) with this run's ``rejects`` merged in
    by the target's upsert rule: one row per (webhook_id, reason), first and last time seen. Writes nothing."""
    rows = summarise_webhook_failures(failures_from_rejects(rejects, seen_at=seen_at))
    previous = load_failures_log(settings)
    merged = pl.concat([previous.select(rows.columns), rows], how="vertical_relaxed")
    return (
        merged.group_by("webhook_id", "reason", maintain_order=True)
        .agg(
            pl.col("event_type").drop_nulls().last(),
            pl.col("body_prefix").drop_nulls().last(),
            pl.col("first_seen").min(),
            pl.col("last_seen").max(),
        )
        .sort("first_seen", "webhook_id", "reason")
        .select(rows.columns)
    )


def _failures_log_path(settings: Settings) -> Path:
    return PublishedState(settings.warehouse_dir, name=FAILURES_LOG).path


def load_failures_log(settings: Settings) -> pl.DataFrame:
    """Every webhook failure runs have recorded in this warehouse (the snapshot's ``webhook_failures``)."""
    path = _failures_log_path(settings)
    if path.exists():
        hint = "delete it: only the snapshot's copy of older failures is lost"
        return read_parquet_checked(path, what="the webhook failures log", hint=hint)
    return pl.DataFrame(schema={c: WEBHOOK_FAILURES.schema[c] for c in WEBHOOK_FAILURE_COLUMNS})


def get_publisher(settings: Settings, *, max_attempts: int | None = None) -> Publisher | None:
    """The configured publisher, or None when neither Supabase target is set (the caller says so once).

    ``max_attempts`` overrides ``MEMBERPULSE_PUBLISH_MAX_ATTEMPTS``."""
    from memberpulse.flows.publish._postgres import PostgresPublisher

    state = PublishedState(settings.warehouse_dir)
    retry = {
        "max_attempts": max_attempts or settings.publish_max_attempts,
        "backoff_seconds": settings.publish_backoff_seconds,
    }
    if settings.publish_target == "postgres" and settings.supabase_db_url is not None:
        return PostgresPublisher(
            settings.supabase_db_url.get_secret_value(),
            state=state,
            connect_timeout_seconds=settings.publish_timeout_seconds,
            statement_timeout_seconds=settings.publish_statement_timeout_seconds,
            lock_timeout_seconds=settings.publish_lock_timeout_seconds,
            **retry,  # type: ignore[arg-type]
        )
    if settings.publish_target == "postgrest" and settings.supabase_url and settings.supabase_service_role_key:
        from memberpulse.flows.publish._postgrest import PostgrestPublisher  # supabase-py is slow to import

        return PostgrestPublisher(
            settings.supabase_url,
            settings.supabase_service_role_key.get_secret_value(),
            state=state,
            batch_size=settings.publish_batch_size,
            timeout_seconds=settings.publish_timeout_seconds,
            **retry,  # type: ignore[arg-type]
        )
    return None
