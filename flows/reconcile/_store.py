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
A damaged manifest or state file stops a run with :class:`~memberpulse.errors.CorruptState` naming the file
and that remedy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from memberpulse.contracts.times import file_time
from memberpulse.errors import CorruptState
from memberpulse.flows.fsio import atomic_write_bytes, atomic_write_parquet, link_atomically, read_parquet_checked
from memberpulse.flows.snapshot import history_file_time, thin_history

MANIFEST_VERSION = 1
# Past this many event-log files, a commit folds them into one so reads stay cheap.
EVENT_LOG_COMPACT_AT = 48
REBUILD_HINT = "run `memberpulse run --full-refresh` to rebuild the reconcile state from the raw landing files"


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
    as_of: str | None = None  # ISO 8601 as-of time of the run that committed this manifest
    # Bumped by every commit whose member state changed: publishers remember the number they last published
    # from, so a publisher one change behind may diff only the members that change touched.
    change_seq: int = 0
    lineage: str | None = None  # a new one whenever the state starts over (first run, full refresh, reset)
    # The settings that change what is folded, as the state was first built (first run, full refresh); a run
    # under other values folds only what it reads under them, so it says a full refresh would apply them.
    fold_settings: dict[str, str] = field(default_factory=dict)

    @property
    def change_token(self) -> str | None:
        """Names the member state this manifest commits; equal tokens mean the same state."""
        return f"{self.lineage}/{self.change_seq}" if self.lineage else None

    def with_(self, **changes: object) -> Manifest:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def as_of_time(self) -> datetime | None:
        return datetime.fromisoformat(self.as_of) if self.as_of else None


_OPTIONAL_TEXT = ("committed_at", "run_id", "state_file", "as_of")
_TEXT_LISTS = ("event_files", "reject_files", "backfills_folded")
_OFFSETS = ("offsets", "quarantine_offsets")


def _manifest_problem(data: Any) -> str | None:
    """What is wrong with a decoded manifest.json, or None when it is a manifest this version can use."""
    if not isinstance(data, dict):
        return f"it holds a JSON {type(data).__name__}, not an object"
    unknown = sorted(set(data) - {f.name for f in fields(Manifest)})
    if unknown:
        return f"unknown key(s) {', '.join(map(repr, unknown))}"
    if data.get("version", MANIFEST_VERSION) != MANIFEST_VERSION:
        return f"version {data.get('version')!r}, this memberpulse reads version {MANIFEST_VERSION}"
    for name in _OPTIONAL_TEXT:
        if not isinstance(data.get(name), str | None):
            return f"{name!r} is not text"
    for name in _TEXT_LISTS:
        value = data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return f"{name!r} is not a list of file names"
    folds = data.get("fold_settings", {})
    if not isinstance(folds, dict) or not all(isinstance(v, str) for v in folds.values()):
        return "'fold_settings' is not a map of setting names to values"
    for name in _OFFSETS:
        value = data.get(name, {})
        if not isinstance(value, dict) or not all(type(v) is int and v >= 0 for v in value.values()):
            return f"{name!r} is not a map of file names to byte offsets"
    try:
        datetime.fromisoformat(data["as_of"]) if data.get("as_of") else None
    except ValueError:
        return f"'as_of' {data['as_of']!r} is not an ISO 8601 time"
    return None


class ReconcileStore:
    def __init__(self, warehouse_dir: Path) -> None:
        self.root = warehouse_dir / "reconcile"
        self.manifest_path = self.root / "manifest.json"

    # --- reading -------------------------------------------------------------------------------------------
    def load_manifest(self) -> Manifest:
        """The committed manifest (an empty one before the first commit); CorruptState when unreadable."""
        try:
            raw = self.manifest_path.read_bytes()
        except FileNotFoundError:
            return Manifest()
        except OSError as exc:
            raise self._damaged(f"cannot be read ({exc.strerror or exc})") from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._damaged(f"is not valid JSON ({'empty file' if not raw.strip() else exc})") from None
        problem = _manifest_problem(data)
        if problem:
            raise self._damaged(problem)
        return Manifest(**data)

    def _damaged(self, problem: str) -> CorruptState:
        return CorruptState(
            f"the reconcile manifest {self.manifest_path} is damaged: {problem}",
            path=str(self.manifest_path),
            hint=REBUILD_HINT,
        )

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
            path = self.root / manifest.state_file
            try:
                pl.scan_parquet(path, glob=False).collect_schema()
            except (pl.exceptions.PolarsError, OSError, ValueError):
                read_parquet_checked(path, what="the reconcile state", hint=REBUILD_HINT)  # names the damage

    def load_state(self, manifest: Manifest) -> pl.DataFrame | None:
        if not manifest.state_file:
            return None
        return read_parquet_checked(self.root / manifest.state_file, what="the reconcile state", hint=REBUILD_HINT)

    def event_paths(self, manifest: Manifest) -> list[Path]:
        return [self.root / f for f in manifest.event_files]

    def history_paths(self) -> list[Path]:
        return sorted((self.root / "history").glob("*.parquet"))

    def load_events(self, manifest: Manifest) -> pl.DataFrame | None:
        paths = self.event_paths(manifest)
        frames = [read_parquet_checked(p, what="the event log file", hint=REBUILD_HINT) for p in paths]
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
        batch_ids = events.get_column("webhook_id").unique()
        try:
            known = (
                pl.scan_parquet(paths, glob=False)
                .select("webhook_id")
                .filter(pl.col("webhook_id").is_in(batch_ids.implode()))
                .unique()
                .collect()
            )
        except (pl.exceptions.PolarsError, OSError):
            # Name the damaged file: read each one on its own (raises CorruptState for the first bad one).
            for path in paths:
                read_parquet_checked(path, what="the event log file", hint=REBUILD_HINT)
            raise
        return events.join(known, on="webhook_id", how="anti") if known.height else events

    # --- writing (staged, then committed) ------------------------------------------------------------------
    def stage_frame(self, kind: str, name: str, frame: pl.DataFrame) -> str:
        rel = f"{kind}/{name}.parquet"
        atomic_write_parquet(frame, self.root / rel)
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
            atomic_write_parquet(scored, path)
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
        if pq_rows(newest) != scored.height:
            return None
        return newest if pl.read_parquet(newest, glob=False).equals(scored) else None

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
        atomic_write_bytes(self.manifest_path, json.dumps(asdict(manifest), indent=1, sort_keys=True).encode())
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


def pq_rows(path: Path) -> int:
    """Row count from a parquet file's footer, without reading its data."""
    return int(pl.scan_parquet(path, glob=False).select(pl.len()).collect().item())
