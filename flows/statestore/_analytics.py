"""The analysts' copies in the object store, and a machine's local copy of them.

After each committed run: ``analytics/latest.duckdb`` (the snapshot), ``analytics/report.html`` and
``analytics/parquet/<table>.parquet`` (every table of the snapshot, for tools that read Parquet from a bucket).
``memberpulse sql`` and ``memberpulse report`` on a machine with only the storage URL read the snapshot from
there: downloaded once per version into ``<data_dir>/analytics/``, then asked for only if it changed (ETag).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Final

import duckdb

from memberpulse.errors import InvalidInput
from memberpulse.flows.fsio import atomic_target, atomic_write_bytes
from memberpulse.flows.state_codec import REMOTE_COPIES, RemoteCopies, read_document, write_document
from memberpulse.settings import Settings
from memberpulse.storage import ObjectStore, open_store

ANALYTICS_PREFIX: Final = "analytics"
LATEST_KEY: Final = f"{ANALYTICS_PREFIX}/latest.duckdb"
REPORT_KEY: Final = f"{ANALYTICS_PREFIX}/report.html"
PARQUET_PREFIX: Final = f"{ANALYTICS_PREFIX}/parquet"
ANALYTICS_CACHE: Final = "analytics"
_VERSIONS: Final = ".versions.json"


def publish_analytics(store: ObjectStore, snapshots_dir: Path, *, snapshot_object: str | None = None) -> list[str]:
    """Upload the latest snapshot, its report and a Parquet file per table; returns the keys written. The
    snapshot goes last, so a reader that sees a new snapshot finds its tables' files already there; when the
    state tree holds it already (``snapshot_object``), it is copied there server-side instead of uploaded again."""
    latest = snapshots_dir / "latest.duckdb"
    if not latest.is_file():
        return []
    written = []
    with tempfile.TemporaryDirectory(prefix="memberpulse-parquet-") as tmp:
        for table, path in _export_tables(latest, Path(tmp)):
            store.put(f"{PARQUET_PREFIX}/{table}.parquet", path)
            written.append(f"{PARQUET_PREFIX}/{table}.parquet")
    report = snapshots_dir / "report.html"
    if report.is_file():
        store.put(REPORT_KEY, report)
        written.append(REPORT_KEY)
    if snapshot_object is not None:
        store.copy(snapshot_object, LATEST_KEY)
    else:
        store.put(LATEST_KEY, latest)
    return [*written, LATEST_KEY]


def _export_tables(snapshot: Path, out_dir: Path) -> list[tuple[str, Path]]:
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        tables = [
            row[0]
            for row in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' ORDER BY 1"
            ).fetchall()
        ]
        exported = []
        for table in tables:
            path = out_dir / f"{table}.parquet"
            con.execute(f"COPY \"{table}\" TO '{path}' (FORMAT parquet, COMPRESSION zstd)")
            exported.append((table, path))
        return exported
    finally:
        con.close()


def fetch_analytics(store: ObjectStore, data_dir: Path) -> Path:
    """The folder holding this machine's copy of ``analytics/latest.duckdb`` as ``latest.duckdb``: downloaded
    when absent, else asked for only if its version (ETag) changed. Returns it as a snapshots folder."""
    folder = data_dir / ANALYTICS_CACHE
    record = folder / _VERSIONS
    versions = dict((read_document(record, REMOTE_COPIES) or RemoteCopies()).versions)
    target = folder / "latest.duckdb"
    cached = versions.get(LATEST_KEY) if target.is_file() else None
    try:
        if cached is None:
            with atomic_target(target) as tmp:
                versions[LATEST_KEY] = store.download(LATEST_KEY, tmp)
        else:
            changed = store.get_if_changed(LATEST_KEY, cached)
            if changed is None:
                return folder
            atomic_write_bytes(target, changed.data)
            versions[LATEST_KEY] = changed.version
    except FileNotFoundError:
        raise InvalidInput(
            f"no snapshot in {store.url}/{LATEST_KEY} yet",
            value=f"{store.url}/{LATEST_KEY}",
            hint="a worker's `memberpulse run` with this MEMBERPULSE_STORAGE_URL writes it",
        ) from None
    write_document(record, REMOTE_COPIES, RemoteCopies(versions=versions))
    return folder


def analysts_snapshots_dir(settings: Settings) -> Path:
    """Where ``memberpulse sql`` and ``report`` find ``latest.duckdb``: the data dir's snapshots, or with the
    storage URL set, this machine's copy of the store's (fetched when its version changed)."""
    store = open_store(settings)
    if store is None:
        return settings.snapshots_dir
    return fetch_analytics(store, settings.data_dir)
