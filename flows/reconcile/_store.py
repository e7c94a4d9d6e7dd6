"""The reconcile flow's incremental state, committed all at once by swapping one manifest.

Layout under ``$MEMBERPULSE_DATA_DIR/warehouse/reconcile/``::

    manifest.json            the commit point: offsets read, state file, event/reject log files, backfills folded,
                             and the as-of time of the run that committed it (a run scoring an earlier time
                             commits nothing: looking back never overwrites the present)
    state/<run>.parquet      member state after that run (transforms.fold output)
    events/<run>.parquet     parsed events ingested by that run (the event log; readers dedupe by webhook_id)
    rejects/<run>.parquet    raw records that could not be parsed
    history/<as_of>.parquet  scored rows of each run, keyed by its as-of time (re-running an as-of replaces it);
                             only the runs the snapshot's history reads are kept (snapshot.thin_history), and a
                             run whose rows equal the previous run's is a hard link to it, not a copy

A run writes its new files first and commits by replacing ``manifest.json`` atomically. A crash before that
leaves the previous manifest in force and the new files orphaned (removed by the next commit), so nothing is
lost and nothing is counted twice. Deleting the ``reconcile/`` folder resets the incremental state; the next
run rebuilds from the raw landing files (``memberpulse run --full-refresh`` does the same without deleting).
The manifest's format and every file's remedy when damaged live in :mod:`memberpulse.flows.state_codec`,
through which each file here is written and read: a damaged one stops a run with
:class:`~memberpulse.errors.CorruptState` naming it and its remedy.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from memberpulse.contracts.times import file_time
from memberpulse.errors import CorruptState
from memberpulse.flows.fsio import link_atomically
from memberpulse.flows.snapshot import history_file_time, thin_history
from memberpulse.flows.state_codec import (
    EVENT_LOG,
    HISTORY,
    RECONCILE_MANIFEST,
    RECONCILE_STATE,
    ReconcileManifest,
    check_table,
    query_tables,
    read_document,
    read_table,
    table_rows,
    write_document,
    write_table,
)

# The manifest's format lives with every other persisted format (state_codec); the flow calls it Manifest.
Manifest = ReconcileManifest
# Past this many event-log files, a commit folds them into one so reads stay cheap.
EVENT_LOG_COMPACT_AT = 48


class ReconcileStore:
    def __init__(self, warehouse_dir: Path) -> None:
        self.root = warehouse_dir / "reconcile"
        self.manifest_path = self.root / "manifest.json"

    # --- reading -------------------------------------------------------------------------------------------
    def load_manifest(self) -> Manifest:
        """The committed manifest (an empty one before the first commit); CorruptState when unreadable."""
        return read_document(self.manifest_path, RECONCILE_MANIFEST) or Manifest()

    def last_as_of(self, *, tolerate_damage: bool = False) -> datetime | None:
        """The as-of time of the last committed run (None before the first, or for a damaged manifest when
        ``tolerate_damage``: a full refresh rebuilds it anyway)."""
        try:
            return self.load_manifest().as_of_time
        except CorruptState:
            if tolerate_damage:
                return None
            raise

    def check_readable(self) -> None:
        """Fail fast, before any work, when the manifest or the state file it names is damaged (CorruptState);
        reads only the manifest and the state file's footer."""
        manifest = self.load_manifest()
        if manifest.state_file:
            check_table(self.root / manifest.state_file, RECONCILE_STATE)

    def load_state(self, manifest: Manifest) -> pl.DataFrame | None:
        if not manifest.state_file:
            return None
        return read_table(self.root / manifest.state_file, RECONCILE_STATE)

    def companies(self) -> list[str]:
        """The companies of the committed member state, sorted: every company a landed (signature-verified or
        recovered) webhook or a backfill named, as of the last commit. Reads one column."""
        manifest = self.load_manifest()
        if not manifest.state_file:
            return []
        found = query_tables(
            [self.root / manifest.state_file],
            RECONCILE_STATE,
            lambda rows: rows.select(pl.col("company_id").drop_nulls().unique()),
        )
        return sorted(found["company_id"].to_list())

    def event_paths(self, manifest: Manifest) -> list[Path]:
        return [self.root / f for f in manifest.event_files]

    def history_paths(self) -> list[Path]:
        return sorted((self.root / "history").glob("*.parquet"))

    def load_events(self, manifest: Manifest) -> pl.DataFrame | None:
        paths = self.event_paths(manifest)
        frames = [read_table(p, EVENT_LOG) for p in paths]
        return pl.concat(frames, how="vertical_relaxed") if frames else None

    def drop_known_events(self, manifest: Manifest, events: pl.DataFrame) -> pl.DataFrame:
        """``events`` minus the webhook ids an earlier run already ingested.

        Whop redelivers with the same id; a redelivery that lands in a later run than the original must not
        count again (a body with no event time of its own takes the signature's time, which differs per try).
        Reads only the ``webhook_id`` column of the log, filtered to this batch's ids.
        """
        paths = self.event_paths(manifest)
        if not paths or events.height == 0:
            return events
        batch_ids = events.get_column("webhook_id").unique().implode()
        known = query_tables(
            paths,
            EVENT_LOG,
            lambda log: log.select("webhook_id").filter(pl.col("webhook_id").is_in(batch_ids)).unique(),
        )
        return events.join(known, on="webhook_id", how="anti") if known.height else events

    # --- writing (staged, then committed) ------------------------------------------------------------------
    def stage_frame(self, kind: str, name: str, frame: pl.DataFrame) -> str:
        rel = f"{kind}/{name}.parquet"
        write_table(frame, self.root / rel)
        return rel

    def write_history(self, as_of: datetime, scored: pl.DataFrame, *, state_changed: bool = True) -> Path:
        """Keep this run's scored rows, then drop the runs the snapshot's history no longer reads.

        Rows equal to the newest run's (a quiet run whose scores did not move) are not written again: the new
        name is a hard link to that file, so many quiet runs take no space. ``state_changed`` (members folded
        new facts) skips that comparison, which would only fail. What is kept is exactly
        ``thin_history`` of everything ever written, so the snapshot's history is the same as keeping all.
        """
        path = self.root / "history" / f"{file_time(as_of)}.parquet"
        same_as = None if state_changed else self._history_equal_to(scored, besides=path)
        if same_as is None:
            write_table(scored, path)
        else:
            link_atomically(same_as, path)
        self._thin_history()
        return path

    def drop_history_after(self, as_of: datetime) -> None:
        """Remove history files of runs dated after ``as_of`` (a full refresh replacing a commit made under a
        clock that was ahead): the snapshot's per-day history never shows days that have not happened."""
        for path in self.history_paths():
            when = history_file_time(path)
            if when is not None and when > as_of:
                path.unlink(missing_ok=True)

    def _history_equal_to(self, scored: pl.DataFrame, *, besides: Path) -> Path | None:
        """The newest history file holding exactly ``scored``, if the newest one does."""
        others = [p for p in self.history_paths() if p != besides and history_file_time(p) is not None]
        if not others:
            return None
        newest = max(others, key=lambda p: history_file_time(p) or datetime.min.replace(tzinfo=UTC))
        if table_rows(newest, HISTORY) != scored.height:
            return None
        return newest if read_table(newest, HISTORY).equals(scored) else None

    def _thin_history(self) -> None:
        paths = self.history_paths()
        keep = set(thin_history(paths))
        for path in paths:
            if path not in keep:
                path.unlink(missing_ok=True)

    def compact_events(self, manifest: Manifest, run_id: str) -> Manifest:
        if len(manifest.event_files) < EVENT_LOG_COMPACT_AT:
            return manifest
        events = self.load_events(manifest)
        assert events is not None
        merged = self.stage_frame("events", f"{run_id}-compacted", events.unique("webhook_id", keep="first"))
        return manifest.with_(event_files=[merged])

    def commit(self, manifest: Manifest) -> None:
        """Make ``manifest`` the state of record, then drop files no manifest refers to."""
        manifest = manifest.with_(committed_at=datetime.now(UTC).isoformat())
        write_document(self.manifest_path, RECONCILE_MANIFEST, manifest)
        self._remove_orphans(manifest)

    def _remove_orphans(self, manifest: Manifest) -> None:
        keep = {manifest.state_file, *manifest.event_files, *manifest.reject_files}
        for kind in ("state", "events", "rejects"):
            folder = self.root / kind
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if f"{kind}/{path.name}" not in keep:
                    path.unlink(missing_ok=True)


def companies_seen(warehouse_dir: Path) -> list[str]:
    """The companies of the committed member state (:meth:`ReconcileStore.companies`). A run committing meanwhile
    may remove the state file this read was about to open: then it reads the new commit's."""
    store = ReconcileStore(warehouse_dir)
    try:
        return store.companies()
    except CorruptState:
        return store.companies()
