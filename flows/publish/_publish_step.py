"""The calls the reconcile flow makes, settings in, plain results out; each opens and closes its publisher.

``publish_members`` also runs with no Supabase target configured: nothing is sent, but the rows are stamped
against a snapshot-only state (``warehouse/published/member_activity.snapshot-only.parquet``) so the DuckDB
snapshot's ``updated_at`` still means "when this row's data last changed". That file is separate from the
target's state on purpose: configuring a target later publishes everything.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

import polars as pl

from memberpulse.contracts.failures import FAILURE_RECORD_SCHEMA
from memberpulse.contracts.frames import conform
from memberpulse.contracts.tables import BODY_PREFIX_CHARS, PIPELINE_RUNS
from memberpulse.contracts.times import UTC_US
from memberpulse.errors import MemberpulseError
from memberpulse.flows.fsio import file_version
from memberpulse.flows.publish._changes import ChangeHints, PublishedState, newly_at_risk, plan_publish
from memberpulse.flows.publish._dsn import mask_dsn
from memberpulse.flows.publish._failure_company import failure_company
from memberpulse.flows.publish._publisher import PipelineRun, PublishConfig, Publisher, PublishResult
from memberpulse.flows.publish._schema import (
    KEY,
    MEMBER_ACTIVITY_SCHEMA,
    PIPELINE_RUN_COLUMNS,
    summarise_webhook_failures,
)
from memberpulse.flows.publish._storable_text import storable_members, storable_text
from memberpulse.flows.publish._targets import FailureLog, TargetState, postgres_key, postgrest_key
from memberpulse.flows.state_codec import RUN_LOG, read_table_if_present, write_table
from memberpulse.settings import Settings

log = logging.getLogger(__name__)
SNAPSHOT_ONLY_STATE: Final = "member_activity.snapshot-only"
RUNS_LOG: Final = "pipeline_runs"
PIPELINE_RUNS_SCHEMA: Final[dict[str, pl.DataType]] = dict(PIPELINE_RUNS.schema)


@dataclass(frozen=True)
class PublishOutcome:
    """``result``: what the target did. ``as_published``: the whole member_activity table with the
    ``updated_at`` values the target holds (for the snapshot). ``newly_at_risk``: members whose status became
    at_risk in this run (JSON-ready dicts)."""

    result: PublishResult
    as_published: pl.DataFrame
    newly_at_risk: list[dict[str, Any]] = field(default_factory=list)
    # The published-state file before and after (for building the snapshot from the previous one).
    version_before: str | None = None
    version_after: str | None = None
    # A preview only: the rows it would send, each with ``action`` "insert" or "update".
    changes: pl.DataFrame | None = None


def target_name(settings: Settings) -> str | None:
    """Where rows are published, safe to print (no password, no key); None when nowhere."""
    if settings.publish_target == "postgres" and settings.supabase_db_url is not None:
        return f"Postgres {mask_dsn(settings.supabase_db_url.get_secret_value())}"
    if settings.publish_target == "postgrest" and settings.supabase_url:
        return f"PostgREST {settings.supabase_url.rstrip('/')}/rest/v1"
    return None


def _empty_members() -> pl.DataFrame:
    return pl.DataFrame(schema=MEMBER_ACTIVITY_SCHEMA)


def publish_members(
    settings: Settings,
    scored: pl.DataFrame,
    *,
    run_at: datetime,
    hints: ChangeHints | None = None,
    rewrite: bool = False,
) -> PublishOutcome:
    """Publish the changed rows of ``scored`` to the configured target (or nowhere) — see the module doc.

    ``hints`` (from the reconcile flow) lets it compare only the rows that can have changed; when they say the
    member state was rebuilt (``--full-refresh``), or with ``rewrite``, the target is rewritten whole."""
    scored = storable_members(scored, KEY)  # the target and the snapshot get the same, storable text
    publisher = get_publisher(settings)
    if publisher is None:
        return _stamp_without_target(settings, scored, run_at=run_at, hints=hints)
    before = file_version(publisher.state.path)
    with publisher:
        result = publisher.publish_members(scored, run_at=run_at, hints=hints, rewrite=rewrite)
    published = result.published if result.published is not None else _empty_members()
    return PublishOutcome(result, published, result.newly_at_risk, before, file_version(publisher.state.path))


def _stamp_without_target(
    settings: Settings, scored: pl.DataFrame, *, run_at: datetime, hints: ChangeHints | None
) -> PublishOutcome:
    state = _snapshot_only_state(settings)
    last = state.members.load()
    before = file_version(state.members.path)
    meta = state.load_meta()
    candidates = None if hints is None else hints.candidates(as_of=meta.as_of, token=meta.change_token,
                                                             scoring=meta.scoring)  # fmt: skip
    plan = plan_publish(scored, last, run_at=run_at, candidates=candidates)
    if plan.changed.height or last is None:
        state.members.save(plan.published)
    known = hints.published_from() if hints is not None else {"as_of": None, "token": None, "scoring": None}
    state.save_meta(meta.with_(as_of=known["as_of"], change_token=known["token"], scoring=known["scoring"]))
    published = plan.published if plan.changed.height or last is None else last
    result = PublishResult(unchanged=scored.height, changed_keys=plan.changed_keys)
    after = file_version(state.members.path)
    return PublishOutcome(result, published, newly_at_risk(plan.changed, last), before, after)


def failures_from_rejects(rejects: pl.DataFrame, *, seen_at: datetime | None = None) -> pl.DataFrame:
    """Failures as found (``contracts.failures.REJECT_SCHEMA``) as logged failures (``FAILURE_RECORD_SCHEMA``).

    A reject without a webhook id (an unreadable line) is keyed by the sha256 of its body excerpt, as the
    landing keys legacy webhooks, and its reason names the segment and byte offset where it lies (two equal
    garbage lines in different places stay two rows). A reject whose received_at is missing or unreadable is
    dated ``seen_at`` (the run that found it); without ``seen_at`` such a row is dropped.
    """
    if rejects.height == 0:
        return pl.DataFrame(schema=FAILURE_RECORD_SCHEMA)
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
        failure_company(rejects),
        body.cast(pl.Utf8).alias("__body"),
    )
    frame = frame.with_columns(
        pl.when(pl.col("webhook_id").is_null())
        .then(pl.col("__body").map_elements(_sha256, return_dtype=pl.Utf8))
        .otherwise(pl.col("webhook_id"))
        .alias("webhook_id")
    )
    frame = frame.filter(pl.col("received_at").is_not_null() & pl.col("reason").is_not_null())
    return storable_text(conform(frame, FAILURE_RECORD_SCHEMA))  # anyone can put a NUL in a refused body


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
    write_table(runs, PublishedState(settings.warehouse_dir, name=RUNS_LOG).path)
    # Every failure is logged here first, target or not, so a target configured later still receives it.
    failures = FailureLog(settings.warehouse_dir)
    new = failures_from_rejects(rejects, seen_at=run.started_at) if rejects is not None else None
    log_rows = failures.append(new) if new is not None else failures.load()
    # Recording a run that already failed gets one attempt: the run's outcome is decided, its exit not delayed.
    publisher = None if local_only else get_publisher(settings, max_attempts=1 if best_effort else None)
    if publisher is None:
        return runs
    try:
        with publisher:
            publisher.record_run(run)
            _send_unsent_failures(publisher, log_rows)
    except MemberpulseError as exc:
        if not best_effort:
            raise
        log.warning("could not record run %s in %s: %s", run.run_id, publisher.describe(), exc)
    return runs


def _send_unsent_failures(publisher: Publisher, log_rows: pl.DataFrame) -> None:
    """Send the failure records this target has not received yet (all of them to a new target)."""
    if publisher.target_state is None:
        return
    meta = publisher.target_state.load_meta()
    sent = min(meta.failures_sent, log_rows.height)
    if sent == log_rows.height:
        return
    publisher.record_failures(log_rows.slice(sent))
    publisher.target_state.save_meta(meta.with_(failures_sent=log_rows.height))


def target_state(settings: Settings) -> TargetState | None:
    """The folder keeping what the configured target holds, or None when no target is configured."""
    if settings.publish_target == "postgres" and settings.supabase_db_url is not None:
        return TargetState(settings.warehouse_dir, postgres_key(settings.supabase_db_url.get_secret_value()))
    if settings.publish_target == "postgrest" and settings.supabase_url and settings.supabase_service_role_key:
        return TargetState(settings.warehouse_dir, postgrest_key(settings.supabase_url))
    return None


def _snapshot_only_state(settings: Settings) -> TargetState:
    """With no target, the rows are stamped against this state: the snapshot is the only place they go."""
    state = TargetState(settings.warehouse_dir, "snapshot-only")
    state.members = PublishedState(settings.warehouse_dir, name=SNAPSHOT_ONLY_STATE)
    return state


def publish_state(settings: Settings) -> TargetState:
    """The state a run's publish compares with: the configured target's, or the snapshot-only one."""
    return target_state(settings) or _snapshot_only_state(settings)


def runs_with(settings: Settings, run: PipelineRun) -> pl.DataFrame:
    """The warehouse's run log with ``run`` in place (by run_id), sorted by start; writes nothing."""
    path = PublishedState(settings.warehouse_dir, name=RUNS_LOG).path
    row = pl.DataFrame([run.as_row()], schema=PIPELINE_RUNS_SCHEMA)
    previous = read_table_if_present(path, RUN_LOG)
    if previous is not None:  # a log written before a column existed: its runs did not count it (null)
        previous = previous.with_columns(
            pl.lit(None, dtype).alias(name) for name, dtype in PIPELINE_RUNS_SCHEMA.items() if name not in previous
        ).select(row.columns)
    runs = row if previous is None else pl.concat([previous.filter(pl.col("run_id") != run.run_id), row])
    return runs.sort("started_at").select(PIPELINE_RUN_COLUMNS)


def preview_publish(settings: Settings, scored: pl.DataFrame, *, run_at: datetime) -> PublishOutcome:
    """What :func:`publish_members` would do now, changing nothing and contacting no one: the rows it would
    insert / update against the last published state, and the table as it would then stand."""
    target = target_state(settings)
    last = (target.members if target else PublishedState(settings.warehouse_dir, name=SNAPSHOT_ONLY_STATE)).load()
    plan = plan_publish(scored, last, run_at=run_at)
    changed, seen = plan.changed.height, plan.seen_before
    result = PublishResult(changed - seen, seen, plan.marked.height - changed, published=plan.published)
    known = last.get_column("membership_id") if last is not None else pl.Series("membership_id", [], pl.String)
    action = pl.when(pl.col("membership_id").is_in(known.implode())).then(pl.lit("update")).otherwise(pl.lit("insert"))
    changes = plan.changed.select(action.alias("action"), pl.all()).sort("action", "membership_id")
    return PublishOutcome(result, plan.published, newly_at_risk(scored, last), changes=changes)


def failures_with(settings: Settings, rejects: pl.DataFrame, *, seen_at: datetime) -> pl.DataFrame:
    """The snapshot's ``webhook_failures``: the warehouse's failure log plus this run's ``rejects``, one row per
    (webhook_id, reason) with first and last time seen (the target's upsert rule). Writes nothing."""
    logged = FailureLog(settings.warehouse_dir).load()
    new = failures_from_rejects(rejects, seen_at=seen_at)
    rows = pl.concat([logged, new.select(logged.columns)], how="vertical_relaxed") if new.height else logged
    return summarise_webhook_failures(rows).sort("first_seen", "webhook_id", "reason")


def get_publisher(settings: Settings, *, max_attempts: int | None = None) -> Publisher | None:
    """The configured publisher, or None when neither Supabase target is set (the caller says so once).

    ``max_attempts`` overrides ``MEMBERPULSE_PUBLISH_MAX_ATTEMPTS``."""
    from memberpulse.flows.publish._postgres import PostgresPublisher

    state = target_state(settings)
    if state is None:
        return None
    config = PublishConfig.from_settings(settings)
    if max_attempts is not None:
        config = replace(config, max_attempts=max_attempts)
    publisher: Publisher
    if settings.publish_target == "postgres" and settings.supabase_db_url is not None:
        db_url = settings.supabase_db_url.get_secret_value()
        publisher = PostgresPublisher(db_url, state=state.members, config=config)
    else:
        assert settings.supabase_url and settings.supabase_service_role_key
        from memberpulse.flows.publish._postgrest import PostgrestPublisher  # supabase-py is slow to import

        key = settings.supabase_service_role_key.get_secret_value()
        publisher = PostgrestPublisher(settings.supabase_url, key, state=state.members, config=config)
    publisher.target_state = state
    return publisher
