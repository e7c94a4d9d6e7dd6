"""The reconcile flow's incremental state, committed all at once by swapping one manifest.

Layout under ``$MEMBERPULSE_DATA_DIR/warehouse/reconcile/``::

    manifest.json            the commit point: offsets read, state file, event/reject log files, backfills folded
    state/<run>.parquet      member state after that run (transforms.fold output)
    events/<run>.parquet     parsed events ingested by that run (the event log; readers dedupe by webhook_id)
    rejects/<run>.parquet    raw records that could not be parsed
    history/<as_of>.parquet  scored rows of each run, keyed by its as-of time (re-running an as-of replaces it)

A run writes its new files first and commits by replacing ``manifest.json`` atomically. A crash before that
leaves the previous manifest in force and the new files orphaned (removed by the next commit), so nothing is
lost and nothing is counted twice. Deleting the ``reconcile/`` folder resets the incremental state; the next
run rebuilds from the raw landing files (``memberpulse run --full-refresh`` does the same without deleting).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from memberpulse.contracts.times import file_time
from memberpulse.flows.fsio import atomic_write_bytes, atomic_write_parquet

MANIFEST_VERSION = 1
# Past this many event-log files, a commit folds them into one so reads stay cheap.
EVENT_LOG_COMPACT_AT = 48


@dataclass(frozen=True)
class Manifest:
    version: int = MANIFEST_VERSION
    committed_at: str | None = None
    run_id: str | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    quarantine_offsets: dict[str, int] = field(default_factory=dict)
    state_file: str | None = None
    event_files: list[str] = field(default_factory=list)
    reject_files: list[str] = field(default_factory=list)
    backfills_folded: list[str] = field(default_factory=list)

    def with_(self, **changes: object) -> Manifest:
        return replace(self, **changes)  # type: ignore[arg-type]


class ReconcileStore:
    def __init__(self, warehouse_dir: Path) -> None:
        self.root = warehouse_dir / "reconcile"
        self.manifest_path = self.root / "manifest.json"

    # --- reading -------------------------------------------------------------------------------------------
    def load_manifest(self) -> Manifest:
        if not self.manifest_path.exists():
            return Manifest()
        raw = json.loads(self.manifest_path.read_text())
        return Manifest(**raw)

    def load_state(self, manifest: Manifest) -> pl.DataFrame | None:
        return pl.read_parquet(self.root / manifest.state_file) if manifest.state_file else None

    def event_paths(self, manifest: Manifest) -> list[Path]:
        return [self.root / f for f in manifest.event_files]

    def history_paths(self) -> list[Path]:
        return sorted((self.root / "history").glob("*.parquet"))

    def load_events(self, manifest: Manifest) -> pl.DataFrame | None:
        paths = self.event_paths(manifest)
        return pl.concat([pl.read_parquet(p) for p in paths], how="vertical_relaxed") if paths else None

    def drop_known_events(self, manifest: Manifest, events: pl.DataFrame) -> pl.DataFrame:
        """``events`` minus the webhook ids an earlier run already ingested.

        Whop redelivers with the same id; a redelivery that lands in a later run than the original must not
        count again (a body with no event time of its own takes the signature's time, which differs per try).
        Reads only the ``webhook_id`` column of the log, filtered to this batch's ids.
        """
        paths = self.event_paths(manifest)
        if not paths or events.height == 0:
            return events
        batch_ids = events.get_column("webhook_id").unique()
        known = (
            pl.scan_parquet(paths)
            .select("webhook_id")
            .filter(pl.col("webhook_id").is_in(batch_ids.implode()))
            .unique()
            .collect()
        )
        return events.join(known, on="webhook_id", how="anti") if known.height else events

    # --- writing (staged, then committed) ------------------------------------------------------------------
    def stage_frame(self, kind: str, name: str, frame: pl.DataFrame) -> str:
        rel = f"{kind}/{name}.parquet"
        atomic_write_parquet(frame, self.root / rel)
        return rel

    def write_history(self, as_of: datetime, scored: pl.DataFrame) -> Path:
        path = self.root / "history" / f"{file_time(as_of)}.parquet"
        atomic_write_parquet(scored, path)
        return path

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
        atomic_write_bytes(
            self.manifest_path, json.dumps(asdict(manifest), indent=1, sort_keys=True).encode()
        )
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
