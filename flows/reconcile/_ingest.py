"""The ingest step: raw lines appended since the last commit → parsed, deduped events folded into member state.

State, offsets and the staged frames are committed at once (``memberpulse.flows.reconcile._store``): a crash before
the commit re-reads the same bytes next time. A run that must not advance the state (``--dry-run``, or an
as-of earlier than the last commit's) ingests in memory only: nothing staged, nothing committed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import polars as pl

from memberpulse import transforms
from memberpulse.contracts.checkpoints import checkpoint
from memberpulse.contracts.failures import REJECT_SCHEMA
from memberpulse.contracts.quarantine import decode_quarantine_entry
from memberpulse.flows.raw import archive as raw_archive
from memberpulse.flows.raw import reader as raw_reader
from memberpulse.flows.raw.remote import pull_raw
from memberpulse.flows.reconcile._store import Manifest, ReconcileStore
from memberpulse.flows.whop import BackfillSnapshot, list_snapshots, read_together
from memberpulse.settings import Settings
from memberpulse.storage import open_store

log = logging.getLogger("memberpulse.reconcile")


@dataclass(frozen=True)
class Ingested:
    """The ingest step's result: the member state it folded, what it read, and (committing) the new manifest."""

    manifest: Manifest
    state: pl.DataFrame
    records_read: int
    events_ingested: int
    rejects: pl.DataFrame
    landing_rejections: pl.DataFrame
    unknown_events: int
    backfills_folded: list[str]
    # Events read by a run that commits nothing: in memory only, not in the manifest's event log.
    uncommitted_events: pl.DataFrame | None = None
    test_webhooks: int = 0  # send-test's mock webhooks read this run (left out unless the setting includes them)
    changed: bool = True  # the member state took new facts (or was rebuilt) in this run
    # The members this run's facts touched (None: possibly all, e.g. a backfill or a rebuild), and the
    # change token of the state this run started from.
    touched: pl.Series | None = None
    token_before: str | None = None
    new_events: pl.DataFrame | None = None  # the events this run added to the log
    # Raw segments that changed after they were ingested (named, with sizes and the remedy): the run shows them.
    raw_warnings: list[str] = field(default_factory=list)

    @property
    def failures(self) -> pl.DataFrame:
        """Everything ``webhook_failures`` should hear about from this run."""
        return pl.concat([self.rejects, self.landing_rejections], how="diagonal_relaxed")


@dataclass
class ParsedNew:
    events: pl.DataFrame
    rejects: pl.DataFrame
    records_read: int
    new_offsets: dict[str, int]
    raw_warnings: list[str] = field(default_factory=list)
    # Every segment's checksum at its offset after this read (raw_reader.Checksums), where it is known.
    checksums: dict[str, int] = field(default_factory=dict)


def api_facts(snapshots: list[BackfillSnapshot]) -> pl.DataFrame | None:
    """The facts Whop's API stated in these backfill snapshots (each its own, as read alone), or None when there
    are none; read in one scan, however many companies' snapshots a backfill left."""
    memberships, members = read_together(snapshots)
    return None if memberships is None else transforms.api_facts(memberships, members)


def parse_new(chunks: Iterator[raw_reader.RawChunk]) -> ParsedNew:
    """Parse slice by slice (keeping each record's segment and offset, so a reject can be found on disk);
    only the compact event rows outlive their slice, never the raw bodies."""
    events, rejects, read, offsets = [], [], 0, {}
    for chunk in chunks:
        lines = transforms.parse_ndjson(chunk.data, source_file=chunk.relpath, base_offset=chunk.start)
        parsed = transforms.parse_raw(lines.records)
        events.append(parsed.events)
        rejects += [_torn_tail_named(chunk, lines.rejects), parsed.rejects]
        read += lines.records.height + lines.rejects.height
        offsets[chunk.relpath] = chunk.end
    return ParsedNew(
        events=transforms.dedupe_events(pl.concat(events) if events else None),
        rejects=pl.concat(rejects, how="diagonal_relaxed") if rejects else pl.DataFrame(schema=REJECT_SCHEMA),
        records_read=read,
        new_offsets=offsets,
    )


_TORN = "torn last line of a sealed segment (its writer never finished it): "


def _torn_tail_named(chunk: raw_reader.RawChunk, rejects: pl.DataFrame) -> pl.DataFrame:
    """Only a sealed segment's torn tail ends a chunk without a newline: its reject says so."""
    if chunk.data.endswith(b"\n") or rejects.height == 0:
        return rejects
    tail = chunk.start + chunk.data.rfind(b"\n") + 1
    torn = pl.col("source_offset") == tail
    return rejects.with_columns(reason=pl.when(torn).then(pl.lit(_TORN) + pl.col("reason")).otherwise("reason"))


def landing_rejections(batch: raw_reader.RawBatch) -> pl.DataFrame:
    """The landing's quarantine lines (refused webhooks: bad signature, stale, too large) as failures found
    (``REJECT_SCHEMA``, no source: the raw store never held them)."""
    rows = []
    for line in batch.joined().splitlines():
        entry = decode_quarantine_entry(line)
        if entry is None:
            continue  # diagnostics only: a torn or foreign line is not worth failing a run for
        rows.append(
            {
                "webhook_id": entry.webhook_id,
                "event_type": None,
                "reason": f"landing {entry.status}: {entry.reason}",
                "received_at": entry.received_at,
                "body": entry.body_prefix,
            }
        )
    return pl.DataFrame(rows, schema=REJECT_SCHEMA)


def _live_quarantine_offsets(settings: Settings, base: Manifest, refused: raw_reader.RawBatch) -> dict[str, int]:
    """The quarantine offsets after this run, without files no longer there: past its cap the landing removes
    whole old files (as compaction removes segments), so the manifest does not grow with every one it wrote."""
    return raw_archive.live_offsets(settings.quarantine_dir, {**base.quarantine_offsets, **refused.new_offsets})


def ingest(
    settings: Settings,
    store: ReconcileStore,
    *,
    run_id: str,
    full_refresh: bool,
    as_of: datetime | None = None,
    commit: bool = True,
) -> Ingested:
    """Read, parse and fold what is new; with ``commit``, stage and commit it (recording ``as_of``)."""
    base = Manifest() if full_refresh else store.load_manifest()
    new = _read_new(settings, base, full_refresh=full_refresh)
    refused = raw_reader.read_new(settings.quarantine_dir, base.quarantine_offsets, raw_reader.QUARANTINE_FILES)
    events, test_webhooks = _without_test_webhooks(settings, store.drop_known_events(base, new.events))
    pending = list_snapshots(settings.warehouse_dir, leaving_out=set(base.backfills_folded))
    previous = store.load_state(base)
    changed = events.height > 0 or bool(pending) or previous is None
    state = previous if not changed and previous is not None else transforms.fold(previous, events, api_facts(pending))
    ingested = Ingested(
        manifest=base,
        state=state,
        records_read=new.records_read,
        events_ingested=events.height,
        rejects=new.rejects,
        landing_rejections=landing_rejections(refused),
        unknown_events=int((events["kind"] == "other").sum()),
        backfills_folded=[s.key for s in pending],
        uncommitted_events=events,
        test_webhooks=test_webhooks,
        changed=changed,
        touched=_touched(events, pending, previous),
        token_before=base.change_token,
        new_events=events,
        raw_warnings=new.raw_warnings,
    )
    if not commit:
        return ingested
    manifest = base.with_(
        run_id=run_id,
        as_of=as_of.isoformat() if as_of else base.as_of,
        **_read_up_to(settings, base, new),
        quarantine_offsets=_live_quarantine_offsets(settings, base, refused),
        **_staged(store, run_id, base, state=state if changed else None, events=events, rejects=new.rejects),
        backfills_folded=[*base.backfills_folded, *(s.key for s in pending)],
        change_seq=base.change_seq + 1 if changed else base.change_seq,
        lineage=base.lineage or uuid.uuid4().hex,
        fold_settings=base.fold_settings or fold_settings(settings),
    )
    manifest = _commit(store, manifest, run_id)
    return replace(ingested, manifest=manifest, uncommitted_events=None)


def _read_up_to(settings: Settings, base: Manifest, new: ParsedNew) -> dict[str, Any]:
    """Where reading each live segment stands after this run: its offset, and the checksum of the bytes before
    it (compacted segments go: the manifest stays proportional to the live landing store)."""
    offsets = raw_archive.live_offsets(settings.landing_dir, {**base.offsets, **new.new_offsets})
    return {"offsets": offsets, "checksums": {rel: crc for rel, crc in new.checksums.items() if rel in offsets}}


def pull_from_store(settings: Settings) -> list[str]:
    """With the storage URL set, the local raw directories are a cache of the landing replicas' chunks: bring
    them up to date before reading (StorageUnavailable, exit 3, when the store does not answer). Returns the
    pull's warnings for the run's report."""
    object_store = open_store(settings)
    if object_store is None:
        return []
    pulled = pull_raw(object_store, settings.landing_dir, settings.quarantine_dir)
    log.info("pulled %d raw chunk(s), %d bytes, from %d landing writer(s)", pulled.chunks, pulled.bytes, pulled.writers)
    return pulled.warnings


def _commit(store: ReconcileStore, manifest: Manifest, run_id: str) -> Manifest:
    manifest = store.compact_events(manifest, run_id)
    checkpoint("ingest_before_commit")
    store.commit(manifest)
    return manifest


def fold_settings(settings: Settings) -> dict[str, str]:
    """The settings that change which events are folded (not how members are scored: scoring reads the whole
    state every run), by variable name."""
    return {"MEMBERPULSE_INCLUDE_TEST_WEBHOOKS": str(settings.include_test_webhooks).lower()}


def fold_settings_changed(settings: Settings, manifest: Manifest) -> str | None:
    """A warning when the committed state was built under other fold settings than this run's."""
    built, now = manifest.fold_settings, fold_settings(settings)
    changed = [f"{k} {built[k]} → {v}" for k, v in now.items() if k in built and built[k] != v]
    if not changed:
        return None
    return (
        f"{', '.join(changed)} since the state was built: it applies to what is read from now on; run "
        "`memberpulse run --full-refresh` to apply it to what was already read"
    )


def _read_new(settings: Settings, base: Manifest, *, full_refresh: bool) -> ParsedNew:
    """What is new in the raw store (pulled from the object store first when it is set); a segment that changed
    after it was ingested is named and read from 0. The checksum of each segment's bytes read so far is carried
    on through what this run reads."""
    pulled = pull_from_store(settings)
    checked = raw_reader.check_offsets(settings.landing_dir, base.offsets)
    checksums = raw_reader.Checksums(checked.offsets, base.checksums)
    new = parse_new(checksums.through(_raw_lines(settings, checked.offsets, full_refresh=full_refresh)))
    reset = {rel: 0 for rel, offset in checked.offsets.items() if offset != base.offsets[rel]}
    offsets = {**base.offsets, **reset, **new.new_offsets}
    return replace(
        new,
        new_offsets={**reset, **new.new_offsets},
        raw_warnings=[*pulled, *checked.warnings],
        checksums=checksums.at(offsets),
    )


def _raw_lines(settings: Settings, offsets: dict[str, int], *, full_refresh: bool) -> Iterator[raw_reader.RawChunk]:
    """A full refresh re-reads all history, compacted or not; an incremental run reads only live segments (a
    compacted segment was fully ingested before it was archived). Both read the torn tails of sealed segments
    (as compaction decides them), so those segments end fully read and can be compacted."""
    landing, sealed = settings.landing_dir, raw_reader.sealed_cutoff(settings.raw_retention_days)
    if full_refresh:
        return raw_archive.iter_history(landing, sealed_before=sealed)
    return raw_reader.iter_new(landing, offsets, sealed_before=sealed)


def _without_test_webhooks(settings: Settings, events: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """send-test's mock webhooks (``test_`` ids) are counted, and kept out unless the setting includes them."""
    count = transforms.count_test_events(events)
    return (events if settings.include_test_webhooks else transforms.drop_test_events(events)), count


def _staged(
    store: ReconcileStore,
    run_id: str,
    base: Manifest,
    *,
    state: pl.DataFrame | None,
    events: pl.DataFrame,
    rejects: pl.DataFrame,
) -> dict[str, Any]:
    """This run's files, staged for the manifest. A quiet run (no new state) keeps the files it has."""
    new_events = [store.stage_frame("events", run_id, events)] if events.height else []
    new_rejects = [store.stage_frame("rejects", run_id, rejects)] if rejects.height else []
    return {
        "state_file": store.stage_frame("state", run_id, state) if state is not None else base.state_file,
        "event_files": [*base.event_files, *new_events],
        "reject_files": [*base.reject_files, *new_rejects],
    }


def _touched(events: pl.DataFrame, pending: list[BackfillSnapshot], previous: pl.DataFrame | None) -> pl.Series | None:
    """Members whose state this run's facts can have changed; None when that may be anyone."""
    if pending or previous is None:
        return None
    return events.get_column("membership_id").drop_nulls().unique()


def scoring_state(settings: Settings, store: ReconcileStore, ingested: Ingested, as_of: datetime) -> pl.DataFrame:
    """The state to score as of T. Facts later than T must not count: a backdated run rebuilds from the log."""
    if not transforms.needs_rebuild(ingested.state, as_of):
        return ingested.state
    events = all_events(store, ingested)
    snapshots = [s for s in list_snapshots(settings.warehouse_dir) if s.fetched_at <= as_of]
    return transforms.fold(None, transforms.dedupe_events(events), api_facts(snapshots), as_of=as_of)


def all_events(store: ReconcileStore, ingested: Ingested) -> pl.DataFrame | None:
    """The event log as this run sees it: the committed files plus what it read and did not commit."""
    logged = store.load_events(ingested.manifest)
    extra = ingested.uncommitted_events
    if extra is None or extra.height == 0:
        return logged
    return extra if logged is None else pl.concat([logged, extra], how="vertical_relaxed")
