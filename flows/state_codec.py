"""Every file memberpulse keeps for itself, in one place: the JSON state documents and the Parquet tables under
the data dir, their formats, how each is written and read, and what a damaged one means.

JSON documents (:func:`write_document`, :func:`read_document`) carry a header: ``"kind"``, which document it
is (a file in the wrong place is not taken for another), and ``"format"``, the storage format that wrote it:
:data:`STATE_FORMAT`, one number for every document, raised whenever any document's layout changes. Reading:

- no file: None. A missing optional file is not damage; the caller knows what its absence means.
- a newer format: CorruptState saying so, and to upgrade (an older memberpulse must not guess at it).
- an older format, including the files of memberpulse 0.2.0 and earlier, which carry no ``"format"`` (format
  1): brought up to date in memory (``DocumentKind.upgrades``), so no install rebuilds anything on upgrade;
  the next write stores the current format.
- anything else wrong (not JSON, not an object, another kind, an unknown key, a wrong type or value):
  CorruptState naming the file, with the kind's remedy as the hint (exit 2).

Parquet tables (:func:`read_table`, :func:`query_tables`, :func:`write_table`, ...) are written atomically with
one set of options and read with ``glob=False`` (a data dir's path may contain ``[``); a damaged or missing
table is CorruptState naming it, with its kind's remedy. Their layout is their schema; they carry no header.

Writes go through :mod:`memberpulse.flows.fsio` (temporary sibling, fsync, rename), so a crash leaves the old
file or the new one. docs/architecture.md ("Persisted state") lists every file with its kind and remedy;
``tests/test_state_access.py`` fails when a product module opens one of them without this codec.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError

from memberpulse.errors import CorruptState
from memberpulse.flows.fsio import atomic_target, atomic_write_bytes, atomic_write_parquet, read_parquet_checked

#: The storage format this memberpulse writes; it reads every format from FIRST_FORMAT up to this one.
#: 3: the publish target's state keeps what the check before each publish compares (TargetMeta).
#: 4: the reconcile manifest keeps a checksum of the bytes read from each segment (ReconcileManifest.checksums).
#: 5: the recovery state keeps where each webhook's delivery log was read up to (RecoveryState.hooks).
STATE_FORMAT: Final = 5
#: memberpulse 0.2.0 and earlier: documents without "kind" and "format" (some kept a version key of their own).
FIRST_FORMAT: Final = 1


# --- field types shared by the documents ----------------------------------------------------------------------


def _iso_time(value: str) -> str:
    datetime.fromisoformat(value)  # ValueError names the bad text
    return value


IsoTime = Annotated[str, AfterValidator(_iso_time)]  # ISO 8601 text, kept as written
Count = Annotated[int, Field(ge=0)]
Crc32 = Annotated[int, Field(ge=0, le=0xFFFFFFFF)]  # zlib.crc32's value
# Strict: a number is not text, true is not 1; unknown keys are refused (a newer format says so in its header).
_CLOSED = ConfigDict(strict=True, extra="forbid")


# --- the documents --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconcileManifest:
    """``warehouse/reconcile/manifest.json``: the reconcile flow's commit point (``reconcile/_store.py``)."""

    __pydantic_config__ = _CLOSED

    committed_at: IsoTime | None = None
    run_id: str | None = None
    offsets: dict[str, Count] = field(default_factory=dict)  # landing segment -> bytes read
    # Landing segment -> CRC-32 of exactly the bytes read (0 .. its offset), chained run after run: compaction
    # archives a segment only while its bytes still have it. Absent: not known (read before format 4).
    checksums: dict[str, Crc32] = field(default_factory=dict)
    quarantine_offsets: dict[str, Count] = field(default_factory=dict)
    state_file: str | None = None
    event_files: list[str] = field(default_factory=list)
    reject_files: list[str] = field(default_factory=list)
    backfills_folded: list[str] = field(default_factory=list)
    as_of: IsoTime | None = None  # the as-of time of the run that committed this manifest
    # Bumped by every commit whose member state changed: publishers remember the number they last published
    # from, so a publisher one change behind may diff only the members that change touched.
    change_seq: Count = 0
    lineage: str | None = None  # a new one whenever the state starts over (first run, full refresh, reset)
    # The settings that change what is folded, as the state was first built (first run, full refresh); a run
    # under other values folds only what it reads under them, so it says a full refresh would apply them.
    fold_settings: dict[str, str] = field(default_factory=dict)

    @property
    def change_token(self) -> str | None:
        """Names the member state this manifest commits; equal tokens mean the same state."""
        return f"{self.lineage}/{self.change_seq}" if self.lineage else None

    def with_(self, **changes: object) -> ReconcileManifest:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def as_of_time(self) -> datetime | None:
        return datetime.fromisoformat(self.as_of) if self.as_of else None


@dataclass(frozen=True)
class TargetMeta:
    """``warehouse/published/targets/<key>/state.json``: what one publish target holds besides its rows
    (``publish/_targets.py``). ``as_of``/``change_token``/``scoring`` describe the scored rows its last member
    publish came from (None: unknown, compare everything next time)."""

    __pydantic_config__ = _CLOSED

    failures_sent: Count = 0
    as_of: IsoTime | None = None
    change_token: str | None = None
    scoring: list[float] | None = None
    # For the check before each publish (``publish/_fingerprint.py``): the digest of the published rows, valid
    # while their file is the version named, and the rows the target held besides them when last measured
    # (someone else's: left alone, and not taken for a difference).
    published_version: str | None = None
    published_digest: Count | None = None
    foreign_rows: Count = 0
    foreign_digest: Count = 0
    repaired: str | None = None  # when and why the target was last re-published whole

    def with_(self, **changes: Any) -> TargetMeta:
        return replace(self, **changes)


@dataclass
class RecoveryState:
    """``warehouse/recovery/state.json``: where the last recovery stopped (``recover/_store.py``)."""

    __pydantic_config__ = _CLOSED

    stopped_at: IsoTime | None = None  # the newest delivery any recovery read (format 4 and earlier: of its one hook)
    # Each webhook's newest delivery read (format 5): a webhook whose read failed keeps its earlier one, so the
    # next recovery reads its log again from there.
    hooks: dict[str, IsoTime] = field(default_factory=dict)
    index_offsets: dict[str, Count] = field(default_factory=dict)  # landing segment -> bytes indexed
    recovered_at: IsoTime | None = None  # when the last recovery committed
    recovered: Count = 0  # events the last recovery brought in
    failed_attempts: Count = 0  # failed attempts in the last recovery's window
    unlogged_failures: Count = 0  # of those, attempts for messages the landing never logged
    unlogged_messages: Count = 0  # distinct messages behind them

    def stopped_at_time(self) -> datetime | None:
        return datetime.fromisoformat(self.stopped_at) if self.stopped_at else None

    def hook_stopped_at(self, hook_id: str) -> datetime | None:
        """Where ``hook_id``'s log was read up to. A state of format 4 or earlier (no ``hooks``) was written by a
        recovery of one webhook: its ``stopped_at`` holds for the webhook of the first recovery after the upgrade."""
        if hook_id in self.hooks:
            return datetime.fromisoformat(self.hooks[hook_id])
        return None if self.hooks else self.stopped_at_time()


@dataclass(frozen=True)
class SnapshotBuild:
    """``snapshots/.build.json``: what the latest snapshot was built from (``snapshot/_incremental.py``)."""

    __pydantic_config__ = _CLOSED

    file: str  # the snapshot file it describes (latest.duckdb must be that file)
    events_token: str | None = None
    members_version: str | None = None
    whop_access_source: str | None = None
    history: dict[str, str | None] = field(default_factory=dict)  # history file name -> fsio.file_version


@dataclass(frozen=True)
class BackfillManifest:
    """``warehouse/backfill/<fetched_at>/_SUCCESS``: a complete backfill snapshot (``whop/_snapshot.py``)."""

    __pydantic_config__ = _CLOSED

    fetched_at: IsoTime
    company_id: str
    counts: dict[str, Count] = field(default_factory=dict)  # resource -> rows
    pages: dict[str, Count] = field(default_factory=dict)  # resource -> pages fetched
    files: dict[str, str] = field(default_factory=dict)  # resource -> file name
    written_at: IsoTime | None = None


@dataclass(frozen=True)
class TreeEntry:
    """One file of the state tree: the object holding its bytes (named by their sha256), its size and sha256."""

    __pydantic_config__ = _CLOSED

    key: str
    size: Count
    sha256: str


@dataclass(frozen=True)
class StateTree:
    """``state/tree.json`` in the object store: every state file (path under the data dir -> its object), the
    single commit point of every run with ``MEMBERPULSE_STORAGE_URL`` set (``statestore/_tree.py``)."""

    __pydantic_config__ = _CLOSED

    files: dict[str, TreeEntry] = field(default_factory=dict)
    run_id: str | None = None
    command: str | None = None  # run, backfill, recover
    holder: str | None = None  # the lease holder that committed it
    committed_at: IsoTime | None = None
    parent: str | None = None  # the version (ETag) of the tree this one replaced


@dataclass(frozen=True)
class StateLease:
    """``state/lease.json`` in the object store: who may commit the state tree, until when (``statestore/_lease.py``).
    ``expires_at`` is the holder's clock; ``released`` frees it before then."""

    __pydantic_config__ = _CLOSED

    holder: str
    command: str
    acquired_at: IsoTime
    expires_at: IsoTime
    released: bool = False


@dataclass(frozen=True)
class CachedFile:
    """A file of the local cache as it was synced: its checksum, valid while its size and mtime are these."""

    __pydantic_config__ = _CLOSED

    sha256: str
    size: Count
    mtime_ns: Count


@dataclass(frozen=True)
class StateCache:
    """``<data_dir>/.state-cache.json``: which tree version the local cache holds, file by file (a cache file
    changed since is uploaded; one the tree has otherwise is fetched)."""

    __pydantic_config__ = _CLOSED

    tree_version: str | None = None
    files: dict[str, CachedFile] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteCopies:
    """``<data_dir>/analytics/.versions.json``: the version (ETag) of each analytics object downloaded here."""

    __pydantic_config__ = _CLOSED

    versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CompanyFailureRecord:
    """Why one company's last backfill failed (``BackfillState.failed``)."""

    __pydantic_config__ = _CLOSED

    reason: str  # one line, never a secret
    kind: Literal["configuration", "transient", "failed"]  # a setting or the company to fix; try later; else
    failed_at: IsoTime


@dataclass(frozen=True)
class BackfillState:
    """``warehouse/backfill/state.json``: the current backfill round (``backfill/_companies.py``). A round starts
    with a backfill of every company; while companies of it failed, the next backfills (within
    MEMBERPULSE_BACKFILL_RETRY_HOURS of its start) fetch only those."""

    __pydantic_config__ = _CLOSED

    round_started_at: IsoTime | None = None
    failed: dict[str, CompanyFailureRecord] = field(default_factory=dict)  # company -> its last failure

    @property
    def round_started(self) -> datetime | None:
        return datetime.fromisoformat(self.round_started_at) if self.round_started_at else None


# --- the kinds: what each file is called in messages, its remedy, and how older formats are read ----------------

D = TypeVar("D")
Body = dict[str, Any]
Upgrade = Callable[[Body], Body]


@dataclass(frozen=True)
class DocumentKind(Generic[D]):
    """One kind of JSON state document. ``upgrades[n]`` turns a format-``n`` body into a format-``n+1`` one
    (absent: unchanged); it raises ValueError for a body no release wrote."""

    name: str
    model: type[D]
    what: str  # how messages name it: "the reconcile manifest"
    hint: str  # the remedy when it is damaged
    upgrades: Mapping[int, Upgrade] = field(default_factory=dict)


@dataclass(frozen=True)
class TableKind:
    """One kind of Parquet table memberpulse keeps; its columns are its contract (see each writer)."""

    name: str
    what: str
    hint: str


def _without_own_version(body: Body) -> Body:
    """0.2.0's manifest kept ``"version": 1`` of its own; the header's format replaces it."""
    if body.pop("version", 1) != 1:
        raise ValueError("its 'version' is not one any memberpulse wrote")
    return body


def _checksums_unknown(body: Body) -> Body:
    """Format 3 kept no checksums: the segments it read are archived unchecked, as that release did (see
    ``ReconcileManifest.checksums``); segments read from the start from now on have one."""
    if "checksums" in body:
        raise ValueError("it holds 'checksums', which no format-3 manifest kept")
    return {**body, "checksums": {}}


def _known_fields(model: type[Any]) -> Upgrade:
    """Releases before 0.2.0 kept fields since dropped (``change_seq``, ``version``, ``extra``), which 0.2.0
    ignored: format-1 files are read the same way."""
    return lambda body: {k: v for k, v in body.items() if k in model.__dataclass_fields__}


REBUILD_HINT = "run `memberpulse run --full-refresh` to rebuild the reconcile state from the raw landing files"
RECOVERY_HINT = (
    "delete the warehouse/recovery folder: the next `memberpulse recover` rebuilds it from the raw store and "
    "Whop's last 30 days, counting nothing twice"
)
BACKFILL_HINT = "delete that backfill's folder and run `memberpulse backfill` to fetch a new one"

RECONCILE_MANIFEST = DocumentKind(
    "reconcile-manifest",
    ReconcileManifest,
    "the reconcile manifest",
    REBUILD_HINT,
    {1: _without_own_version, 3: _checksums_unknown},
)
PUBLISH_TARGET = DocumentKind(
    "publish-target",
    TargetMeta,
    "the publish target's state",
    "delete it: the next run compares every row and sends that target every failure record again "
    "(both are upserts by key: nothing doubles)",
    {1: _known_fields(TargetMeta)},
)
RECOVERY_STATE = DocumentKind("recovery-state", RecoveryState, "the recovery state", RECOVERY_HINT)
SNAPSHOT_BUILD = DocumentKind(
    "snapshot-build",
    SnapshotBuild,
    "the snapshot build record",
    "delete it: the next run builds the snapshot in full and records it again",
)
BACKFILL_MANIFEST = DocumentKind("backfill-manifest", BackfillManifest, "the backfill manifest", BACKFILL_HINT)
BACKFILL_STATE = DocumentKind(
    "backfill-state",
    BackfillState,
    "the backfill round's state",
    "delete it: the next `memberpulse backfill` starts a new round and fetches every company",
)

RECONCILE_STATE = TableKind("reconcile-state", "the reconcile state", REBUILD_HINT)
EVENT_LOG = TableKind("event-log", "the event log file", REBUILD_HINT)
HISTORY = TableKind(
    "history", "the history file", "delete it: only that run's rows in the snapshot's member_activity_history go"
)
PUBLISHED_ROWS = TableKind(
    "published-rows",
    "the published-state file",
    "delete it: the next run sends every current row again (upserts by key, nothing doubles)",
)
RUN_LOG = TableKind(
    "run-log", "the run log", "delete it: only the earlier runs' rows in the snapshot's pipeline_runs table are lost"
)
RUN_COMPANY_LOG = TableKind(
    "run-company-log",
    "the per-company run log",
    "delete it: only the earlier runs' rows in the snapshot's pipeline_run_companies table are lost",
)
FAILURE_LOG = TableKind(
    "failure-log",
    "the webhook failures log",
    "delete it: failure records already sent stay in the targets; unsent ones are lost",
)
RECOVERY_INDEX = TableKind("recovery-index", "the recovery index", RECOVERY_HINT)
RECOVERY_DELIVERIES = TableKind("recovery-deliveries", "the recovered delivery log", RECOVERY_HINT)
BACKFILL_TABLE = TableKind("backfill-table", "the backfill file", BACKFILL_HINT)
RAW_ARCHIVE = TableKind(
    "raw-archive",
    "the raw archive file",
    "restore it from a backup: it is the only copy of that day's raw webhooks (runs go on without it)",
)

STATE_TREE = DocumentKind(
    "state-tree",
    StateTree,
    "the state tree",
    "restore the previous version of state/tree.json from the bucket's versioning, or delete it to start the "
    "shared state over (then `memberpulse run --full-refresh`)",
)
STATE_LEASE = DocumentKind(
    "state-lease",
    StateLease,
    "the state lease",
    "delete state/lease.json once no run is working: the next run takes it",
)
CACHE_HINT = "delete it: the local cache is checked against the state tree again, and fetched where it differs"
STATE_CACHE = DocumentKind("state-cache", StateCache, "the local cache's record", CACHE_HINT)
REMOTE_COPIES = DocumentKind("remote-copies", RemoteCopies, "the analytics cache's record", CACHE_HINT)

DOCUMENT_KINDS: tuple[DocumentKind[Any], ...] = (
    RECONCILE_MANIFEST, PUBLISH_TARGET, RECOVERY_STATE, SNAPSHOT_BUILD, BACKFILL_MANIFEST, STATE_TREE, STATE_LEASE,
    STATE_CACHE, REMOTE_COPIES, BACKFILL_STATE,
)  # fmt: skip
TABLE_KINDS: tuple[TableKind, ...] = (
    RECONCILE_STATE, EVENT_LOG, HISTORY, PUBLISHED_ROWS, RUN_LOG, RUN_COMPANY_LOG, FAILURE_LOG, RECOVERY_INDEX,
    RECOVERY_DELIVERIES, BACKFILL_TABLE, RAW_ARCHIVE,
)  # fmt: skip


# --- JSON documents -------------------------------------------------------------------------------------------


def write_document(path: Path, kind: DocumentKind[D], document: D) -> None:
    """Replace ``path`` atomically with ``document``, headed by its kind and the current format."""
    atomic_write_bytes(path, encode_document(kind, document))


def encode_document(kind: DocumentKind[D], document: D) -> bytes:
    """``document`` as the bytes of its file (or object), headed by its kind and the current format."""
    if not isinstance(document, kind.model):
        raise TypeError(f"{kind.name} holds {kind.model.__name__}, not {type(document).__name__}")
    body = _adapter(kind.model).dump_python(document, mode="json")
    text = json.dumps({"kind": kind.name, "format": STATE_FORMAT, **body}, indent=1, sort_keys=True)
    return (text + "\n").encode()


def read_document(path: Path, kind: DocumentKind[D]) -> D | None:
    """The document at ``path``, None when there is no file; CorruptState when it cannot be used."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _damaged(path, kind, f"it cannot be read ({exc.strerror or exc})") from None
    return decode_document(raw, kind, path=path)


def decode_document(raw: bytes, kind: DocumentKind[D], *, path: Path) -> D:
    """``raw`` (the bytes of ``path``) as a current ``kind`` document (see the module docstring)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _damaged(path, kind, "it is empty" if not raw.strip() else f"it is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _damaged(path, kind, f"it holds a JSON {_json_type(data)}, not an object")
    body = _current_body(data, kind, path)
    try:
        return _adapter(kind.model).validate_json(json.dumps(body))
    except ValidationError as exc:
        raise _damaged(path, kind, _first_problem(exc)) from None


def _current_body(data: Body, kind: DocumentKind[Any], path: Path) -> Body:
    """The body of a decoded document, header checked and removed, upgraded to the current format."""
    body = dict(data)
    written = body.pop("format", FIRST_FORMAT)
    declared = body.pop("kind", None)
    if type(written) is not int or written < FIRST_FORMAT:
        raise _damaged(path, kind, f"its 'format' {written!r} is not a storage format")
    if written > STATE_FORMAT:
        raise CorruptState(
            f"{kind.what} {path} was written by a newer memberpulse (format {written}); this one reads formats "
            f"up to {STATE_FORMAT}: upgrade",
            path=str(path),
            hint="upgrade memberpulse to the release that wrote it, or a later one",
        )
    if declared is None and written > FIRST_FORMAT:
        raise _damaged(path, kind, "it names no 'kind'")
    if declared is not None and declared != kind.name:
        raise _damaged(path, kind, f"it holds a {declared!r} document, not a {kind.name!r} one")
    for version in range(written, STATE_FORMAT):
        try:
            body = kind.upgrades.get(version, _unchanged)(body)
        except ValueError as exc:
            raise _damaged(path, kind, str(exc)) from None
    return body


def _unchanged(body: Body) -> Body:
    return body


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(model: type[D]) -> TypeAdapter[D]:
    """The validator for ``model``, built once (building one costs about a millisecond)."""
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS[model] = TypeAdapter(model)
    return adapter


def _damaged(path: Path, kind: DocumentKind[Any], problem: str) -> CorruptState:
    return CorruptState(f"{kind.what} {path} is damaged: {problem}", path=str(path), hint=kind.hint)


def _json_type(value: object) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _first_problem(exc: ValidationError) -> str:
    """The first thing pydantic found, said plainly: "unknown key 'x'", "'offsets.a': input should be ..."."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "unexpected_keyword_argument":
        return f"unknown key {where!r}"
    if error["type"] in ("missing", "missing_argument"):
        return f"{where!r} is missing"
    message = error["msg"].removeprefix("Value error, ")
    message = f"{message[:1].lower()}{message[1:]}"
    return f"{where!r}: {message}" if where else message


# --- Parquet tables -------------------------------------------------------------------------------------------


def write_table(frame: pl.DataFrame, path: Path) -> None:
    """Replace ``path`` atomically with ``frame`` (zstd, with statistics)."""
    atomic_write_parquet(frame, path)


def sink_table(query: pl.LazyFrame, path: Path) -> None:
    """Stream ``query``'s rows into ``path``, replacing it atomically (``query`` may read ``path`` itself)."""
    with atomic_target(path) as tmp:
        query.sink_parquet(tmp, compression="zstd", statistics=True)


def open_table_writer(path: Path, schema: pa.Schema, *, write_statistics: bool | list[str] = True) -> pq.ParquetWriter:
    """A writer streaming row groups into ``path`` (zstd), for tables too large to hold as one frame; the
    caller makes the file's appearance atomic (``fsio.atomic_target``, or a directory renamed whole)."""
    return pq.ParquetWriter(path, schema, compression="zstd", write_statistics=write_statistics)


def read_table(path: Path, kind: TableKind) -> pl.DataFrame:
    """The whole table; a missing, truncated or foreign file is CorruptState naming it, with the remedy."""
    return read_parquet_checked(path, what=kind.what, hint=kind.hint)


def read_table_if_present(path: Path, kind: TableKind) -> pl.DataFrame | None:
    """The table, or None when it was never written (an optional table); damage is still CorruptState."""
    return read_table(path, kind) if path.exists() else None


def query_tables(
    paths: Sequence[Path],
    kind: TableKind,
    query: Callable[[pl.LazyFrame], pl.LazyFrame],
    *,
    file_column: str | None = None,
) -> pl.DataFrame:
    """``query`` over the files as one lazy frame: only the columns and row groups it needs are read
    (``file_column``: a column holding each row's file path, as ``str(path)``). A damaged file is CorruptState
    naming it (each file is then read on its own to find it)."""
    try:
        return query(pl.scan_parquet(list(paths), glob=False, include_file_paths=file_column)).collect()
    except (pl.exceptions.PolarsError, OSError, ValueError):
        _name_the_damaged(paths, kind)
        raise  # every file reads: the query itself is wrong


def scan_table(path: Path) -> pl.LazyFrame:
    """A lazy frame over a table this process has just written (read errors surface as polars errors when it
    is collected: for tables kept from earlier runs use :func:`query_tables`, which names a damaged one)."""
    return pl.scan_parquet(path, glob=False)


def table_rows(path: Path, kind: TableKind) -> int:
    """The row count, from the file's footer."""
    return int(query_tables([path], kind, lambda frame: frame.select(pl.len())).item())


def check_table(path: Path, kind: TableKind) -> None:
    """CorruptState unless ``path`` is a readable table; reads only its footer."""
    try:
        pl.scan_parquet(path, glob=False).collect_schema()
    except (pl.exceptions.PolarsError, OSError, ValueError):
        _name_the_damaged([path], kind)
        raise


def open_table_file(path: Path, kind: TableKind) -> pq.ParquetFile:
    """The file opened for reading by row group (its footer read and checked); close it when done."""
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        problem = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        message = f"{kind.what} {path} is damaged or missing: {problem}"
        raise CorruptState(message, path=str(path), hint=kind.hint) from None


def _name_the_damaged(paths: Iterable[Path], kind: TableKind) -> None:
    for path in paths:
        read_table(path, kind)
