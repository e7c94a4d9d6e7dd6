"""Backfill snapshots: one immutable directory per backfill under ``<warehouse>/backfill/``.

Layout (brief, "Cross-part contracts")::

    warehouse/backfill/20261127T120000123456Z/memberships.parquet
                                              members.parquet
                                              _SUCCESS          (JSON manifest, written last:
                                                                 state_codec.BackfillManifest)

A run writes into ``backfill/.tmp-<uuid>/``, fsyncs every file, writes ``_SUCCESS``, fsyncs the directory
and renames it to its final name (then fsyncs ``backfill/``). A reader only ever sees complete snapshots; a
run that fails removes its tmp dir, and one that was killed leaves a tmp dir the next run deletes.
Latest = the greatest name holding ``_SUCCESS``. A damaged ``_SUCCESS`` or Parquet file is CorruptState naming
it (remedy: delete that folder and back fill again); a folder without ``_SUCCESS`` is simply not complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping
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


def list_snapshots(warehouse_dir: Path) -> list[BackfillSnapshot]:
    """Every complete backfill snapshot, oldest first (tmp dirs and dirs without ``_SUCCESS`` are skipped);
    CorruptState when a ``_SUCCESS`` is damaged."""
    root = backfill_dir(warehouse_dir)
    if not root.is_dir():
        return []
    snapshots = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            snapshots.append(BackfillSnapshot.open(entry))
        except FileNotFoundError:
            continue  # not complete: a backfill that never finished (a damaged manifest stops the caller)
    return snapshots


def latest_snapshot(warehouse_dir: Path) -> BackfillSnapshot | None:
    """The newest complete snapshot, or None before the first successful backfill."""
    snapshots = list_snapshots(warehouse_dir)
    return snapshots[-1] if snapshots else None


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
        self.final_dir = self.root / snapshot_name(self.fetched_at)
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
            os.rename(self.tmp_dir, self.final_dir)
            fsync_path(self.root)
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
