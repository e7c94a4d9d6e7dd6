"""What recovery keeps: the index of webhook ids already in the raw store, its own segment files, Whop's
delivery log as last read, and where the last recovery stopped.

Layout under ``$MEMBERPULSE_DATA_DIR/warehouse/recovery/``::

    state.json              the commit point: where the last recovery stopped, index offsets, its counts
    known_ids.parquet       every webhook id in the raw store (webhook_id, landed: true = through the landing)
    deliveries.parquet      Whop's delivery attempts read (the snapshot's webhook_deliveries), last 30 days

Order of writes: recovered records first (a new segment under the landing directory, streamed to a hidden
temporary file while the log is read, fsync'd and renamed into place only once every page was read), then
the deliveries it could not take (a quarantine file, so they reach ``webhook_failures``), then the delivery
log, then the index, then ``state.json``. A crash before
the end leaves the previous state in force; the next recovery re-reads the raw store from the old offsets,
finds the ids it already wrote, and does not write them again. The index is incremental: each recovery reads
only the raw bytes appended since the last one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import orjson
import polars as pl

from memberpulse.contracts.quarantine import decode_quarantine_entry, quarantine_path
from memberpulse.contracts.raw_record import DELIVERY_LOG_WRITER, SCHEME_DELIVERY_LOG, segment_path
from memberpulse.contracts.tables import WEBHOOK_DELIVERIES
from memberpulse.contracts.times import file_time
from memberpulse.flows.fsio import fsync_path
from memberpulse.flows.raw import reader as raw_reader
from memberpulse.flows.state_codec import (
    RECOVERY_DELIVERIES,
    RECOVERY_INDEX,
    RECOVERY_STATE,
    RecoveryState,
    read_document,
    read_table_if_present,
    write_document,
    write_table,
)

#: How long Whop keeps delivery attempts.
RETENTION = timedelta(days=30)
_KNOWN_SCHEMA = pl.Schema({"webhook_id": pl.String(), "landed": pl.Boolean()})


class RecoveryStore:
    def __init__(self, warehouse_dir: Path, landing_dir: Path, quarantine_dir: Path) -> None:
        self.root = warehouse_dir / "recovery"
        self.landing_dir = landing_dir
        self.quarantine_dir = quarantine_dir
        self.state_path = self.root / "state.json"
        self.known_path = self.root / "known_ids.parquet"
        self.deliveries_path = self.root / "deliveries.parquet"

    # --- reading -------------------------------------------------------------------------------------------
    def load_state(self) -> RecoveryState:
        """Where the last recovery stopped (a fresh state before the first); CorruptState when unreadable."""
        return read_document(self.state_path, RECOVERY_STATE) or RecoveryState()

    def known_ids(self, state: RecoveryState) -> tuple[pl.DataFrame, dict[str, int]]:
        """Every webhook id in the raw store (the stored index plus what was appended since), and the new
        offsets to store with it."""
        known = read_table_if_present(self.known_path, RECOVERY_INDEX)
        frames = [_KNOWN_SCHEMA.to_frame() if known is None else known]
        # A segment changed since it was indexed is indexed again from its start (ids are merged, not counted).
        offsets = raw_reader.check_offsets(self.landing_dir, state.index_offsets).offsets
        for chunk in raw_reader.iter_new(self.landing_dir, dict(offsets)):
            frames.append(_ids_in(chunk.data))
            offsets[chunk.relpath] = chunk.end
        merged = pl.concat(frames).group_by("webhook_id").agg(pl.col("landed").any())
        return merged, offsets

    def quarantined_ids(self) -> set[str]:
        """Webhook ids the landing refused and logged (its quarantine)."""
        batch = raw_reader.read_new(self.quarantine_dir, {}, raw_reader.QUARANTINE_FILES)
        ids = set()
        for line in batch.joined().splitlines():
            entry = decode_quarantine_entry(line)
            if entry is not None and entry.webhook_id:
                ids.add(entry.webhook_id)
        return ids

    def deliveries(self) -> pl.DataFrame:
        """The delivery log as the last recovery kept it, in ``webhook_deliveries``' columns (a log written
        before a column existed, e.g. ``company_id``, reads with it null: those attempts did not keep it)."""
        read = read_table_if_present(self.deliveries_path, RECOVERY_DELIVERIES)
        if read is None:
            return WEBHOOK_DELIVERIES.schema.to_frame()
        missing = [pl.lit(None, t).alias(c) for c, t in WEBHOOK_DELIVERIES.schema.items() if c not in read.columns]
        return read.with_columns(missing).select(WEBHOOK_DELIVERIES.names)

    # --- writing -------------------------------------------------------------------------------------------
    def record_sink(self, now: datetime, *, seq: int = 1) -> RecordSink:
        """Where recovered records are streamed while a delivery log is read (named only at the end); each
        webhook read by one recovery has its own ``seq``."""
        path = segment_path(self.landing_dir, now.date(), f"{DELIVERY_LOG_WRITER}-{file_time(now)}", seq)
        return RecordSink(path)

    def write_failures(self, lines: list[bytes], now: datetime) -> Path | None:
        """Deliveries recovery could not take, as quarantine entries (the reconcile reads them into
        ``webhook_failures``); one new file, durable before its name appears."""
        if not lines:
            return None
        path = quarantine_path(self.quarantine_dir, f"{DELIVERY_LOG_WRITER}-{file_time(now)}")
        sink = RecordSink(path)
        sink.write(lines)
        return sink.commit()

    def commit(
        self, state: RecoveryState, known: pl.DataFrame, recovered_ids: Iterable[str], deliveries: pl.DataFrame
    ) -> None:
        """Delivery log, index, then the state file (the commit point)."""
        self.root.mkdir(parents=True, exist_ok=True)
        horizon = datetime.now(UTC) - RETENTION
        merged = (
            pl.concat([self.deliveries(), deliveries], how="vertical_relaxed")
            .unique("delivery_id", keep="last", maintain_order=True)
            .filter(pl.col("sent_at") >= horizon)
            .sort("sent_at", "delivery_id")
        )
        write_table(merged.select(WEBHOOK_DELIVERIES.names), self.deliveries_path)
        new = pl.DataFrame({"webhook_id": list(recovered_ids)}, schema={"webhook_id": pl.String()})
        known = pl.concat([known, new.with_columns(landed=pl.lit(False))]).unique("webhook_id", keep="first")
        write_table(known, self.known_path)
        write_document(self.state_path, RECOVERY_STATE, state)


class RecordSink:
    """Lines streamed to a hidden temporary file beside ``path`` (its name is not a segment's, so no reader
    globs it half-written), made durable and renamed into place by :meth:`commit`; :meth:`abort` drops it.
    Recovered records never sit in memory all at once, however long the delivery log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self._tmp = path.with_name(f".{uuid.uuid4().hex}.partial")
        self._fh: BinaryIO | None = None

    def write(self, lines: list[bytes]) -> None:
        if not lines:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self._tmp, "wb")  # noqa: SIM115 - closed by commit or abort
        self._fh.write(b"".join(lines))
        self.lines += len(lines)

    def commit(self) -> Path | None:
        """fsync, rename into place, fsync the directory; None when nothing was written."""
        if self._fh is None:
            return None
        try:
            self._fh.close()
            fsync_path(self._tmp)
            os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)
        fsync_path(self.path.parent)
        return self.path

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)


def _ids_in(data: bytes) -> pl.DataFrame:
    """(webhook_id, landed) of each raw-record line; lines that are not records are skipped (the reconcile
    reports those)."""
    ids: list[str] = []
    landed: list[bool] = []
    for line in data.splitlines():
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("webhook_id"), str):
            ids.append(doc["webhook_id"])
            landed.append(doc.get("scheme") != SCHEME_DELIVERY_LOG)
    return pl.DataFrame({"webhook_id": ids, "landed": landed}, schema=_KNOWN_SCHEMA)
