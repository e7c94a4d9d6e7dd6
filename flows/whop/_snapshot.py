"""Backfill snapshots: one immutable directory per company and fetch under ``<warehouse>/backfill/``.

Layout (brief, "Cross-part contracts")::

    warehouse/backfill/biz_XXXX/20261127T120000123456Z/memberships.parquet
                                                       members.parquet
                                                       _SUCCESS          (JSON manifest, written last:
                                                                          state_codec.BackfillManifest)
    warehouse/backfill/20261126T030000000000Z/...       (memberpulse 0.2.0 and earlier: one company, no
                                                         company folder; still read, never written)

A run writes into ``backfill/.tmp-<uuid>/``, fsyncs every file, writes ``_SUCCESS``, fsyncs the directory
and renames it to its final name (then fsyncs the company folder). A reader only ever sees complete snapshots;
a run that fails removes its tmp dir, and one that was killed leaves a tmp dir the next run deletes.
A company's latest = its newest snapshot holding ``_SUCCESS`` (an older-layout folder's company is the one its
``_SUCCESS`` names). A snapshot's key, the name the reconcile remembers it by, is its path under ``backfill/``
(``biz_XXXX/<fetched_at>``, or ``<fetched_at>`` for an older-layout one). A damaged ``_SUCCESS`` or Parquet file
is CorruptState naming it (remedy: delete that folder and back fill again); a folder without ``_SUCCESS`` is
simply not complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from memberpulse.contracts.times import file_time
from memberpulse.errors import InvalidInput, StorageUnavailable
from memberpulse.flows.fsio import fsync_path
from memberpulse.flows.state_codec import (
    BACKFILL_MANIFEST,
    BACKFILL_TABLE,
    BackfillManifest,
    open_table_writer,
    query_tables,
    read_document,
    read_table,
    scan_table,
    sink_table,
    table_rows,
    write_document,
)
from memberpulse.flows.whop._records import MEMBERS_SCHEMA, MEMBERSHIPS_SCHEMA, Resource

log = logging.getLogger("memberpulse.backfill")

MANIFEST_NAME = "_SUCCESS"
TMP_PREFIX = ".tmp-"
SCHEMAS: dict[Resource, pa.Schema] = {"memberships": MEMBERSHIPS_SCHEMA, "members": MEMBERS_SCHEMA}


def backfill_dir(warehouse_dir: Path) -> Path:
    return Path(warehouse_dir) / "backfill"


def company_dir(warehouse_dir: Path, company_id: str) -> Path:
    """Where one company's snapshots live (company ids are checked when settings load, and when taken from
    webhooks, so one is always a plain folder name)."""
    return backfill_dir(warehouse_dir) / company_id


def snapshot_name(fetched_at: datetime) -> str:
    return file_time(fetched_at)


@dataclass(frozen=True)
class BackfillSnapshot:
    """A complete snapshot on disk; ``read_*`` loads a frame, nothing is read until asked."""

    path: Path
    fetched_at: datetime
    company_id: str
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Its path under ``backfill/``: ``biz_…/<fetched_at>`` (``<fetched_at>`` for an older-layout one)."""
        legacy = self.path.parent.name == "backfill"  # company folders are biz_…
        return self.path.name if legacy else f"{self.path.parent.name}/{self.path.name}"

    @property
    def memberships_path(self) -> Path:
        return self.path / "memberships.parquet"

    @property
    def members_path(self) -> Path:
        return self.path / "members.parquet"

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_NAME

    def read_memberships(self) -> pl.DataFrame:
        return read_table(self.memberships_path, BACKFILL_TABLE)

    def read_members(self) -> pl.DataFrame:
        return read_table(self.members_path, BACKFILL_TABLE)

    @classmethod
    def open(cls, path: Path) -> BackfillSnapshot:
        """Read a snapshot directory's manifest; ``FileNotFoundError`` if it has none (not complete),
        CorruptState when it is damaged."""
        manifest = read_document(path / MANIFEST_NAME, BACKFILL_MANIFEST)
        if manifest is None:
            raise FileNotFoundError(path / MANIFEST_NAME)
        fetched_at = datetime.fromisoformat(manifest.fetched_at).astimezone(UTC)
        return cls(path=path, fetched_at=fetched_at, company_id=manifest.company_id, counts=manifest.counts)


def _is_fetch_name(name: str) -> bool:
    """A fetch folder's name is its fetched_at, ``YYYYMMDDTHHMMSSffffffZ``; a company folder's is ``biz_…``."""
    return len(name) == 22 and name[8] == "T" and name.endswith("Z") and name[:8].isdigit()


def snapshot_dirs(warehouse_dir: Path) -> list[Path]:
    """Every fetch folder, complete or not, of both layouts (nothing opened)."""
    root = backfill_dir(warehouse_dir)
    if not root.is_dir():
        return []
    found: list[Path] = []
    for entry in root.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if _is_fetch_name(entry.name):
            found.append(entry)
        else:
            found.extend(p for p in entry.iterdir() if _is_fetch_name(p.name) and p.is_dir())
    return found


def _open_complete(paths: Iterable[Path]) -> list[BackfillSnapshot]:
    snapshots = []
    for path in paths:
        try:
            snapshots.append(BackfillSnapshot.open(path))
        except FileNotFoundError:
            continue  # not complete: a backfill that never finished (a damaged manifest stops the caller)
    return snapshots


def _first_complete(paths: Iterable[Path]) -> BackfillSnapshot | None:
    """The first complete snapshot of ``paths``, opening no more manifests than it takes."""
    for path in paths:
        try:
            return BackfillSnapshot.open(path)
        except FileNotFoundError:
            continue
    return None


def _in_time_order(snapshots: list[BackfillSnapshot]) -> list[BackfillSnapshot]:
    return sorted(snapshots, key=lambda s: (s.path.name, s.company_id, s.key))


def list_snapshots(warehouse_dir: Path, *, leaving_out: Container[str] = ()) -> list[BackfillSnapshot]:
    """Every complete backfill snapshot but those whose key is in ``leaving_out`` (already folded: their manifests
    are not even opened), oldest first; CorruptState when a ``_SUCCESS`` read is damaged."""
    dirs = snapshot_dirs(warehouse_dir)
    if leaving_out:
        root = backfill_dir(warehouse_dir)
        dirs = [d for d in dirs if str(d.relative_to(root)) not in leaving_out]
    return _in_time_order(_open_complete(dirs))


def latest_snapshots(warehouse_dir: Path) -> list[BackfillSnapshot]:
    """Each company's newest complete snapshot (one company with an older-layout folder too: the newer of the
    two), in company order. Opens one ``_SUCCESS`` per company, newest first, past any unfinished ones."""
    root = backfill_dir(warehouse_dir)
    if not root.is_dir():
        return []
    newest: dict[str, BackfillSnapshot] = {}
    for snap in _open_complete(p for p in root.iterdir() if _is_fetch_name(p.name) and p.is_dir()):
        if snap.company_id not in newest or snap.path.name > newest[snap.company_id].path.name:
            newest[snap.company_id] = snap
    for folder in root.iterdir():
        if folder.name.startswith(".") or _is_fetch_name(folder.name) or not folder.is_dir():
            continue
        names = sorted((p.name for p in folder.iterdir() if _is_fetch_name(p.name)), reverse=True)
        found = _first_complete(folder / n for n in names if _newer(newest, folder.name, n))
        if found is not None:
            newest[found.company_id] = found
    return [newest[c] for c in sorted(newest)]


def _newer(newest: Mapping[str, BackfillSnapshot], company_id: str, name: str) -> bool:
    known = newest.get(company_id)
    return known is None or name > known.path.name


def read_together(snapshots: Sequence[BackfillSnapshot]) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """The memberships and the members of several companies' snapshots, one scan each (reading a thousand
    companies' files costs about what one company's of as many rows does); each row carries its ``snapshot``
    (the key), so members are matched within their snapshot and a person in two companies is two members.
    (None, None) for no snapshots."""
    if not snapshots:
        return None, None
    return _read_keyed(snapshots, "memberships"), _read_keyed(snapshots, "members")


def _read_keyed(snapshots: Sequence[BackfillSnapshot], table: str) -> pl.DataFrame:
    """One table of every snapshot, each row with its snapshot's key."""
    paths = [s.path / f"{table}.parquet" for s in snapshots]
    key_of = pl.LazyFrame({"_file": [str(p) for p in paths], "snapshot": [s.key for s in snapshots]})

    def keyed(rows: pl.LazyFrame) -> pl.LazyFrame:
        return rows.join(key_of, on="_file", how="left").drop("_file")

    return query_tables(paths, BACKFILL_TABLE, keyed, file_column="_file")


def snapshots_token(snapshots: Sequence[BackfillSnapshot]) -> str | None:
    """Names a set of snapshots in a few bytes (the snapshot build record compares it run to run)."""
    if not snapshots:
        return None
    keys = "\n".join(sorted(s.key for s in snapshots))
    return f"{len(snapshots)}:{hashlib.sha256(keys.encode()).hexdigest()[:32]}"


def latest_snapshot(warehouse_dir: Path, company_id: str | None = None) -> BackfillSnapshot | None:
    """The newest complete snapshot (of ``company_id``, or of any company), or None before the first one."""
    snapshots = [s for s in latest_snapshots(warehouse_dir) if company_id in (None, s.company_id)]
    return max(snapshots, key=lambda s: (s.path.name, s.key)) if snapshots else None


def clean_stale_tmp(warehouse_dir: Path, *, older_than_seconds: float = 3600.0) -> list[Path]:
    """Delete tmp dirs left by killed runs. A dir counts as stale when nothing in it changed for
    ``older_than_seconds``, so a backfill still writing elsewhere keeps its own."""
    root = backfill_dir(warehouse_dir)
    if not root.is_dir():
        return []
    removed = []
    now = time.time()
    for entry in root.iterdir():
        if not entry.name.startswith(TMP_PREFIX) or not entry.is_dir():
            continue
        try:
            newest = max([entry.stat().st_mtime, *(p.stat().st_mtime for p in entry.iterdir())])
        except FileNotFoundError:
            continue  # its run just finished or aborted
        if now - newest >= older_than_seconds:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
            log.info("removed stale backfill tmp dir %s", entry)
    return removed


def _storage_error(action: str, path: Path, exc: OSError) -> StorageUnavailable:
    return StorageUnavailable(
        f"could not {action} {path}: {exc.strerror or exc}",
        hint="check free space and permissions under MEMBERPULSE_DATA_DIR",
    )


class ParquetSink:
    """Streams record batches into one Parquet file; buffers up to ``rows_per_group`` rows so row groups are
    a useful size while memory stays bounded by one group."""

    def __init__(self, path: Path, schema: pa.Schema, *, rows_per_group: int = 65_536) -> None:
        self.path = path
        self.schema = schema
        self.rows = 0
        self._rows_per_group = rows_per_group
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        try:
            self._writer: pq.ParquetWriter | None = open_table_writer(path, schema)
        except OSError as exc:
            raise _storage_error("create", path, exc) from exc

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows >= self._rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if not self._pending or self._writer is None:
            return
        try:
            self._writer.write_table(pa.Table.from_batches(self._pending, schema=self.schema))
        except OSError as exc:
            raise _storage_error("write", self.path, exc) from exc
        self._pending, self._pending_rows = [], 0

    def close(self) -> int:
        """Flush, close and fsync; returns the row count."""
        if self._writer is not None:
            self._flush()
            try:
                self._writer.close()
                fsync_path(self.path)
            except OSError as exc:
                raise _storage_error("close", self.path, exc) from exc
            self._writer = None
        return self.rows

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None


class SnapshotWriter:
    """Builds one snapshot in a tmp dir and publishes it atomically with :meth:`commit`.

    Leaving the ``with`` block without a commit (an error, a give-up) deletes the tmp dir: no partial
    snapshot, and the previous one stays the latest.
    """

    def __init__(self, warehouse_dir: Path, *, fetched_at: datetime, company_id: str) -> None:
        self.root = backfill_dir(warehouse_dir)
        self.fetched_at = fetched_at.astimezone(UTC)
        self.company_id = company_id
        self.final_dir = company_dir(warehouse_dir, company_id) / snapshot_name(self.fetched_at)
        self.tmp_dir = self.root / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        self.committed: BackfillSnapshot | None = None
        try:
            self.tmp_dir.mkdir(parents=True)
        except OSError as exc:
            raise _storage_error("create", self.tmp_dir, exc) from exc

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.committed is None:
            self.abort()

    def path_for(self, resource: Resource) -> Path:
        return self.tmp_dir / f"{resource}.parquet"

    def abort(self) -> None:
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def commit(self, *, pages: Mapping[str, int] | None = None) -> BackfillSnapshot:
        """Fill gaps, write ``_SUCCESS`` last, rename into place. Both resources must have been written."""
        for resource in SCHEMAS:
            if not self.path_for(resource).is_file():
                raise RuntimeError(f"snapshot commit without {resource}.parquet in {self.tmp_dir}")
        if self.final_dir.exists():
            raise InvalidInput(
                f"a backfill snapshot named {self.final_dir.name} already exists; snapshots are immutable",
                value=self.final_dir.name,
                hint="each backfill needs its own fetched_at",
            )
        try:
            self._fill_membership_users()
            counts: dict[str, int] = {r: table_rows(self.path_for(r), BACKFILL_TABLE) for r in SCHEMAS}
            manifest = BackfillManifest(
                fetched_at=self.fetched_at.isoformat().replace("+00:00", "Z"),
                company_id=self.company_id,
                counts=counts,
                pages=dict(pages or {}),
                files={r: self.path_for(r).name for r in SCHEMAS},
                written_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            )
            write_document(self.tmp_dir / MANIFEST_NAME, BACKFILL_MANIFEST, manifest)
            fsync_path(self.tmp_dir)
            if not self.final_dir.parent.is_dir():
                self.final_dir.parent.mkdir(exist_ok=True)
                fsync_path(self.root)
            os.rename(self.tmp_dir, self.final_dir)
            fsync_path(self.final_dir.parent)
        except OSError as exc:
            raise _storage_error("publish the snapshot", self.final_dir, exc) from exc
        self.committed = BackfillSnapshot(
            path=self.final_dir, fetched_at=self.fetched_at, company_id=self.company_id, counts=counts
        )
        return self.committed

    def _fill_membership_users(self) -> None:
        """Memberships whose list item carried no ``user`` get username/name/email from the members list (by
        member id), so both tables are complete whichever shape Whop answered with."""
        memberships = self.path_for("memberships")
        missing = query_tables(
            [memberships], BACKFILL_TABLE, lambda rows: rows.filter(pl.col("username").is_null()).select(pl.len())
        )
        if missing.item() == 0:
            return
        people = (
            scan_table(self.path_for("members"))
            .select(
                "member_id",
                pl.col("username").alias("_username"),
                pl.col("name").alias("_name"),
                pl.col("email").alias("_email"),
            )
            .unique("member_id", keep="last")
        )
        filled = (
            scan_table(memberships)
            .join(people, on="member_id", how="left", maintain_order="left")
            .with_columns(
                pl.coalesce("username", "_username").alias("username"),
                pl.coalesce("name", "_name").alias("name"),
                pl.coalesce("email", "_email").alias("email"),
            )
            .select(MEMBERSHIPS_SCHEMA.names)
        )
        sink_table(filled, memberships)
