"""Published state kept per target, so a new or different target gets everything it has not seen.

Layout under ``warehouse/published/``::

    targets/<key>/member_activity.parquet   rows last committed to that target (changes.PublishedState)
    targets/<key>/state.json                what else that target has received: failure records sent,
                                            and the as-of / change sequence / scoring of its last publish
    webhook_failures.parquet                every failure record ever counted, in order (append-only)

``<key>`` names the target without secrets: ``postgres-`` + a hash of host, port, database and user, or
``postgrest-`` + a hash of the URL. Configuring a target for the first time, or pointing at another database,
finds no folder for it: the whole current table and every failure record go to it on the next run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import psycopg
from psycopg import conninfo

from memberpulse.contracts.failures import FAILURE_RECORD_SCHEMA
from memberpulse.flows.publish._changes import PublishedState
from memberpulse.flows.state_codec import (
    FAILURE_LOG,
    PUBLISH_TARGET,
    TargetMeta,
    read_document,
    read_table_if_present,
    write_document,
    write_table,
)


def _digest(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def postgres_key(dsn: str) -> str:
    """``postgres-<hash of user@host:port/dbname>``; the password and other parameters do not count."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        parts = {}
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    identity = f"{parts.get('user') or ''}@{host}:{parts.get('port') or '5432'}/{parts.get('dbname') or ''}"
    return f"postgres-{_digest(identity)}"


def postgrest_key(url: str) -> str:
    return f"postgrest-{_digest(url.strip().rstrip('/').lower())}"


class TargetState:
    """One target's folder: its published rows and its ``state.json``."""

    def __init__(self, warehouse_dir: Path, key: str) -> None:
        self.key = key
        self.root = warehouse_dir / "published" / "targets" / key
        self.members = PublishedState(warehouse_dir, path=self.root / "member_activity.parquet")
        self.meta_path = self.root / "state.json"

    def load_meta(self) -> TargetMeta:
        """What the target holds (nothing yet, before its first publish); CorruptState when unreadable."""
        return read_document(self.meta_path, PUBLISH_TARGET) or TargetMeta()

    def save_meta(self, meta: TargetMeta) -> None:
        write_document(self.meta_path, PUBLISH_TARGET, meta)


class FailureLog:
    """Every webhook failure record this warehouse counted, so any target can be sent what it lacks."""

    def __init__(self, warehouse_dir: Path) -> None:
        self.path = warehouse_dir / "published" / "webhook_failures.parquet"

    def load(self) -> pl.DataFrame:
        log = read_table_if_present(self.path, FAILURE_LOG)
        if log is None:
            return pl.DataFrame(schema=FAILURE_RECORD_SCHEMA)
        # A log written before a column existed (company_id): its records did not carry it (null).
        missing = [
            pl.lit(None, dtype).alias(name) for name, dtype in FAILURE_RECORD_SCHEMA.items() if name not in log.columns
        ]
        return log.with_columns(missing).select(FAILURE_RECORD_SCHEMA.names()) if missing else log

    def append(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Add ``rows`` (logged failures, ``FAILURE_RECORD_SCHEMA``) and return the whole log."""
        log = self.load()
        if rows.height == 0:
            return log
        new = rows.select(pl.col(c).cast(t) for c, t in FAILURE_RECORD_SCHEMA.items())
        log = pl.concat([log, new])
        write_table(log, self.path)
        return log
