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
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
from psycopg import conninfo

from memberpulse.contracts.failures import FAILURE_RECORD_SCHEMA
from memberpulse.flows.fsio import atomic_write_bytes, atomic_write_parquet, read_parquet_checked
from memberpulse.flows.publish._changes import PublishedState


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


@dataclass(frozen=True)
class TargetMeta:
    """What one target holds besides its rows. ``as_of``/``change_token``/``scoring`` describe the scored
    rows its last member publish came from (None: unknown, compare everything next time)."""

    failures_sent: int = 0
    as_of: str | None = None
    change_token: str | None = None
    scoring: list[float] | None = None

    def with_(self, **changes: Any) -> TargetMeta:
        return replace(self, **changes)


class TargetState:
    """One target's folder: its published rows and its ``state.json``."""

    def __init__(self, warehouse_dir: Path, key: str) -> None:
        self.key = key
        self.root = warehouse_dir / "published" / "targets" / key
        self.members = PublishedState(warehouse_dir, path=self.root / "member_activity.parquet")
        self.meta_path = self.root / "state.json"

    def load_meta(self) -> TargetMeta:
        if not self.meta_path.exists():
            return TargetMeta()
        raw = json.loads(self.meta_path.read_text())
        known = {k: v for k, v in raw.items() if k in TargetMeta.__dataclass_fields__}
        return TargetMeta(**known)

    def save_meta(self, meta: TargetMeta) -> None:
        atomic_write_bytes(self.meta_path, json.dumps(asdict(meta), indent=1, sort_keys=True).encode())


class FailureLog:
    """Every webhook failure record this warehouse counted, so any target can be sent what it lacks."""

    def __init__(self, warehouse_dir: Path) -> None:
        self.path = warehouse_dir / "published" / "webhook_failures.parquet"

    def load(self) -> pl.DataFrame:
        if not self.path.exists():
            return pl.DataFrame(schema=FAILURE_RECORD_SCHEMA)
        hint = "delete it: failure records already sent stay in the targets; unsent ones are lost"
        return read_parquet_checked(self.path, what="the webhook failures log", hint=hint)

    def append(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Add ``rows`` (logged failures, ``FAILURE_RECORD_SCHEMA``) and return the whole log."""
        log = self.load()
        if rows.height == 0:
            return log
        new = rows.select(pl.col(c).cast(t) for c, t in FAILURE_RECORD_SCHEMA.items())
        log = pl.concat([log, new])
        atomic_write_parquet(log, self.path)
        return log
