"""The reconcile flow: raw webhooks + Whop's API view → scored members → Supabase and a DuckDB snapshot.

One run, in order, each step safe to crash in:

1. ingest   read raw lines appended since the last commit, parse, dedupe, fold them (and any backfill snapshot
            not folded yet) into member state; commit state + offsets at once (``memberpulse.flows.warehouse``).
2. score    every member as of T (now, or ``--as-of``).
3. publish  only rows that changed since the last successful publish; the target's transaction is the
            commit, and the published-state file advances only after it.
4. snapshot a new DuckDB file swapped in as ``snapshots/latest.duckdb``.
5. record   the run in ``pipeline_runs`` (Supabase and the snapshot) and as a Prefect artifact.

A crash before (1)'s commit re-reads the same bytes next time; after it, the next run finds the rows still
unpublished and publishes them. Runs never overlap: a file lock, on top of the deployment's concurrency limit.
"""

from __future__ import annotations

import fcntl
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from memberpulse import transforms
from memberpulse.errors import RunInProgress
from memberpulse.flows import raw_reader
from memberpulse.flows.faults import kill_point
from memberpulse.flows.publish import PipelineRun, PublishOutcome, publish_members, record_run, target_name
from memberpulse.flows.retry_policy import TRANSIENT_RETRY
from memberpulse.flows.snapshot import thin_history, write_snapshot
from memberpulse.flows.warehouse import Manifest, ReconcileStore
from memberpulse.flows.whop import BackfillSnapshot, latest_snapshot, list_snapshots
from memberpulse.settings import Settings

log = logging.getLogger("memberpulse.reconcile")
# A first run over a big company can put 100k members "newly at risk"; the artifact lists the first ones and
# the summary says how many (Prefect refuses events of tens of MB, and nobody reads such a table).
AT_RISK_LISTED = 1000


@dataclass
class Ingested:
    manifest: Manifest
    state: pl.DataFrame
    records_read: int
    events_ingested: int
    rejects: pl.DataFrame
    landing_rejections: pl.DataFrame
    unknown_events: int
    backfills_folded: list[str]

    @property
    def failures(self) -> pl.DataFrame:
        """Everything ``webhook_failures`` should hear about from this run."""
        return pl.concat([self.rejects, self.landing_rejections], how="diagonal_relaxed")


@dataclass
class RunReport:
    run_id: str
    as_of: datetime
    started_at: datetime
    finished_at: datetime | None = None
    status: str = "running"
    full_refresh: bool = False
    records_read: int = 0
    events_ingested: int = 0
    rejects: int = 0
    landing_rejections: int = 0
    unknown_events: int = 0
    members: int = 0
    members_by_status: dict[str, int] = field(default_factory=dict)
    publish_target: str | None = None
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    drift_count: int = 0
    snapshot_path: str | None = None
    newly_at_risk_count: int = 0
    newly_at_risk: list[dict[str, Any]] = field(default_factory=list)  # the first AT_RISK_LISTED of them
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 3)


@contextmanager
def run_lock(warehouse_dir: Path) -> Iterator[None]:
    """One reconcile at a time per data dir, even outside Prefect's concurrency limit."""
    warehouse_dir.mkdir(parents=True, exist_ok=True)
    with open(warehouse_dir / ".reconcile.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInProgress(
                f"another reconcile run holds the lock on {warehouse_dir}",
                hint="runs never overlap; this one can run again once that one has finished",
            ) from None
        yield


# --- steps ------------------------------------------------------------------------------------------------


def _facts(snapshots: list[BackfillSnapshot]) -> pl.DataFrame | None:
    frames = [transforms.api_facts(s.read_memberships(), s.read_members()) for s in snapshots]
    return pl.concat(frames, how="diagonal_relaxed") if frames else None


@dataclass
class ParsedNew:
    events: pl.DataFrame
    rejects: pl.DataFrame
    records_read: int
    new_offsets: dict[str, int]


def _parse(chunks: Iterator[raw_reader.RawChunk]) -> ParsedNew:
    """Parse slice by slice (keeping each record's segment and offset, so a reject can be found on disk);
    only the compact event rows outlive their slice, never the raw bodies."""
    events, rejects, read, offsets = [], [], 0, {}
    for chunk in chunks:
        lines = transforms.parse_ndjson(chunk.data, source_file=chunk.relpath, base_offset=chunk.start)
        parsed = transforms.parse_raw(lines.records)
        events.append(parsed.events)
        rejects += [lines.rejects, parsed.rejects]
        read += lines.records.height + lines.rejects.height
        offsets[chunk.relpath] = chunk.end
    return ParsedNew(
        events=transforms.dedupe_events(pl.concat(events) if events else None),
        rejects=pl.concat(rejects, how="diagonal_relaxed")
        if rejects
        else pl.DataFrame(schema=transforms.REJECT_SCHEMA),
        records_read=read,
        new_offsets=offsets,
    )


def _landing_rejections(batch: raw_reader.RawBatch) -> pl.DataFrame:
    """The landing's quarantine lines (refused webhooks: bad signature, stale, too large) as failure rows."""
    rows = []
    for line in batch.joined().splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # diagnostics only: a torn or foreign line is not worth failing a run for
        headers = entry.get("headers") or {}
        rows.append(
            {
                "webhook_id": headers.get("webhook-id"),
                "event_type": None,
                "reason": f"landing {entry.get('status')}: {entry.get('reason')}",
                "received_at": entry.get("received_at"),
                "body": entry.get("body_prefix"),
            }
        )
    schema = {"webhook_id": pl.Utf8, "event_type": pl.Utf8, "reason": pl.Utf8, "received_at": pl.Utf8, "body": pl.Utf8}
    return pl.DataFrame(rows, schema=schema)


def ingest(settings: Settings, store: ReconcileStore, *, run_id: str, full_refresh: bool) -> Ingested:
    base = Manifest() if full_refresh else store.load_manifest()
    new = _parse(raw_reader.iter_new(settings.landing_dir, base.offsets))
    refused = raw_reader.read_new(settings.quarantine_dir, base.quarantine_offsets, raw_reader.QUARANTINE_FILES)
    events, rejects = store.drop_known_events(base, new.events), new.rejects
    pending = [s for s in list_snapshots(settings.warehouse_dir) if s.path.name not in base.backfills_folded]
    previous = store.load_state(base)
    changed = events.height > 0 or bool(pending) or previous is None
    state = transforms.fold(previous, events, _facts(pending)) if changed else previous
    assert state is not None

    manifest = base.with_(
        run_id=run_id,
        offsets={**base.offsets, **new.new_offsets},
        quarantine_offsets={**base.quarantine_offsets, **refused.new_offsets},
        # A quiet run (nothing new) keeps the files it has instead of writing copies of them.
        state_file=store.stage_frame("state", run_id, state) if changed else base.state_file,
        event_files=[*base.event_files, *([store.stage_frame("events", run_id, events)] if events.height else [])],
        reject_files=[*base.reject_files, *([store.stage_frame("rejects", run_id, rejects)] if rejects.height else [])],
        backfills_folded=[*base.backfills_folded, *(s.path.name for s in pending)],
    )
    manifest = store.compact_events(manifest, run_id)
    store.commit(manifest)
    return Ingested(
        manifest=manifest,
        state=state,
        records_read=new.records_read,
        events_ingested=events.height,
        rejects=rejects,
        landing_rejections=_landing_rejections(refused),
        unknown_events=int((events["kind"] == "other").sum()),
        backfills_folded=[s.path.name for s in pending],
    )


def scoring_state(settings: Settings, store: ReconcileStore, ingested: Ingested, as_of: datetime) -> pl.DataFrame:
    """The state to score as of T. Facts later than T must not count: a backdated run rebuilds from the log."""
    if not transforms.needs_rebuild(ingested.state, as_of):
        return ingested.state
    events = store.load_events(ingested.manifest)
    snapshots = [s for s in list_snapshots(settings.warehouse_dir) if s.fetched_at <= as_of]
    return transforms.fold(None, transforms.dedupe_events(events), _facts(snapshots), as_of=as_of)


def score(settings: Settings, state: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    params = transforms.ScoringParams(
        half_life_days=settings.half_life_days,
        active_days=settings.active_days,
        at_risk_days=settings.at_risk_days,
    )
    return transforms.score(state, as_of=as_of, params=params)


def drift(settings: Settings, state: pl.DataFrame) -> pl.DataFrame:
    snap = latest_snapshot(settings.warehouse_dir)
    if snap is None:
        return transforms.drift(state, None, None)
    return transforms.drift(state, snap.read_memberships(), snap.read_members())


@task(name="ingest", **{**TRANSIENT_RETRY, "retries": 2})
def ingest_task(settings: Settings, store: ReconcileStore, run_id: str, full_refresh: bool) -> Ingested:
    return ingest(settings, store, run_id=run_id, full_refresh=full_refresh)


# No Prefect retries: the publisher retries transient failures itself (MEMBERPULSE_PUBLISH_MAX_ATTEMPTS), and
# retrying its final failure again would multiply its attempts and timeouts.
@task(name="publish", **{**TRANSIENT_RETRY, "retries": 0})
def publish_task(settings: Settings, scored: pl.DataFrame, run_at: datetime) -> PublishOutcome:
    return publish_members(settings, scored, run_at=run_at)


@task(name="snapshot", cache_policy=NO_CACHE)
def snapshot_task(**kwargs: Any) -> Path:
    return write_snapshot(**kwargs)


def _summary_markdown(report: RunReport) -> str:
    by_status = "\n".join(f"| {k} | {v} |" for k, v in sorted(report.members_by_status.items()))
    target = report.publish_target or "nowhere (no SUPABASE_DB_URL or SUPABASE_URL set)"
    return f"""# Reconcile run `{report.run_id[:8]}`

as of **{report.as_of.isoformat()}**{" (full refresh)" if report.full_refresh else ""}

| measure | value |
|---|---|
| raw records read | {report.records_read} |
| events ingested | {report.events_ingested} |
| rejects (unparseable records) | {report.rejects} |
| refused by the landing (quarantine) | {report.landing_rejections} |
| unknown event types | {report.unknown_events} |
| members | {report.members} |
| published to | {target} |
| rows inserted / updated / unchanged | {report.inserted} / {report.updated} / {report.unchanged} |
| drift (API vs webhooks) | {report.drift_count} |
| newly at risk | {report.newly_at_risk_count} |
| snapshot | `{report.snapshot_path}` |
| seconds per step | {", ".join(f"{k} {v}" for k, v in report.seconds.items())} |

| status | members |
|---|---|
{by_status}
"""


@flow(name="reconcile", log_prints=False)
def reconcile_flow(
    as_of: datetime | None = None, full_refresh: bool = False, settings: Settings | None = None
) -> dict[str, Any]:
    """Ingest new raw webhooks, fold, score, publish changed rows, write the DuckDB snapshot.

    A deployment passes no ``settings`` and reads the environment; the CLI passes its own (Prefect records
    parameters, and ``SecretStr`` fields serialise masked, so no secret reaches its database).
    """
    settings = settings or Settings()
    logger = get_run_logger()
    report = reconcile(settings, as_of=as_of, full_refresh=full_refresh, logger=logger)
    create_markdown_artifact(_summary_markdown(report), key="reconcile-summary", description="Reconcile run")
    create_table_artifact(
        report.newly_at_risk or [{"membership_id": "(none)"}],
        key="members-newly-at-risk",
        description=f"Members whose status became at_risk in this run (at most {AT_RISK_LISTED} listed)",
    )
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in report.__dict__.items()}


def reconcile(
    settings: Settings,
    *,
    as_of: datetime | None,
    full_refresh: bool,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
) -> RunReport:
    started = datetime.now(UTC)
    run_at = started
    as_of = (as_of or started).astimezone(UTC)
    report = RunReport(run_id=str(uuid.uuid4()), as_of=as_of, started_at=started, full_refresh=full_refresh)
    store = ReconcileStore(settings.warehouse_dir)
    report.publish_target = target_name(settings)
    if report.publish_target is None:
        logger.info("no Supabase target configured (SUPABASE_DB_URL or SUPABASE_URL): publishing nowhere")
    with run_lock(settings.warehouse_dir):
        try:
            with report.step("ingest"):
                ingested = ingest_task(settings, store, report.run_id, full_refresh)
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
            kill_point("after_ingest")

            with report.step("score"):
                scored = score(settings, scoring_state(settings, store, ingested, as_of), as_of)
                store.write_history(as_of, scored)
            report.members = len(scored)
            report.members_by_status = {
                row["status"]: row["len"] for row in scored.group_by("status").len().iter_rows(named=True)
            }

            with report.step("publish"):
                outcome = publish_task(settings, scored, run_at)
            report.inserted, report.updated, report.unchanged = (
                outcome.result.inserted,
                outcome.result.updated,
                outcome.result.unchanged,
            )
            report.newly_at_risk_count = len(outcome.newly_at_risk)
            report.newly_at_risk = outcome.newly_at_risk[:AT_RISK_LISTED]
            published = outcome.as_published
            logger.info(
                "published to %s: %d inserted, %d updated, %d unchanged",
                report.publish_target or "nowhere",
                report.inserted,
                report.updated,
                report.unchanged,
            )

            with report.step("drift"):
                drift_frame = drift(settings, ingested.state)
            report.drift_count = len(drift_frame)
            report.status = "completed"
            report.finished_at = datetime.now(UTC)
            with report.step("record"):
                runs = record_run(settings, PipelineRun.from_report(report), rejects=ingested.failures)
            with report.step("snapshot"):
                path = snapshot_task(
                    snapshots_dir=settings.snapshots_dir,
                    run_id=report.run_id,
                    run_at=run_at,
                    member_activity=published,
                    events_parquet=store.event_paths(ingested.manifest),
                    history_parquet=thin_history(store.history_paths()),
                    drift=drift_frame,
                    pipeline_runs=runs,
                    keep=settings.snapshots_keep,
                )
            report.snapshot_path = str(path)
            logger.info("snapshot written: %s", path)
        except BaseException as exc:
            report.status = "failed"
            report.error = str(exc)
            report.finished_at = datetime.now(UTC)
            if isinstance(exc, Exception):
                record_run(settings, PipelineRun.from_report(report), rejects=None, best_effort=True)
            raise
    return report


def run_once(settings: Settings, *, as_of: datetime | None, full_refresh: bool) -> int:
    """``memberpulse run``: one reconcile flow run in Prefect's ephemeral mode, then a summary table."""
    from memberpulse.flows.console import print_run_summary, quiet_prefect

    quiet_prefect()
    result = reconcile_flow(as_of=as_of, full_refresh=full_refresh, settings=settings)
    print_run_summary(result)
    return 0
