"""Build the next snapshot from the previous one plus this run's changes, instead of from all history.

The previous snapshot is copied (it is read-only, so the copy is the only way to change it) and brought up to
date in one transaction: the run's new events appended, the members whose published row changed replaced,
history runs added and dropped as ``thin_history`` decides, the small tables (drift, runs, snapshot_info,
and Whop's access times when a newer backfill arrived) rebuilt. A build record next to the snapshots
(``.build.json``, :class:`~memberpulse.flows.state_codec.SnapshotBuild`) says what the latest snapshot was
made from; when there is none, it does not describe the current ``latest.duckdb``, or anything in it does not
match what this run starts from, the full build runs instead (a damaged one is CorruptState: delete it).
Both paths give the same tables (tests/flows/test_snapshot_incremental.py).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from memberpulse.flows.fsio import file_version
from memberpulse.flows.state_codec import SNAPSHOT_BUILD, SnapshotBuild, read_document, write_document

BUILD_NAME = ".build.json"


@dataclass(frozen=True)
class SnapshotLineage:
    """Where this run's inputs came from, and how they moved since the previous run.

    ``events_token``: the member state whose event log the snapshot's events table holds (``before``: the one
    this run started from); ``new_events``: the events this run added to the log. ``members_version``: the
    published-state file the member_activity table holds (``before``: before this run's publish);
    ``changed_members``: the keys whose published row this run changed. ``whop_access_source``: the backfill
    file Whop's access times come from. ``full``: build from scratch whatever the previous snapshot is.
    """

    events_token_before: str | None
    events_token: str | None
    new_events: pl.DataFrame | None
    members_version_before: str | None
    members_version: str | None
    changed_members: pl.Series | None
    whop_access_source: str | None = None
    full: bool = False


def history_versions(files: list[tuple[Path, Any]]) -> dict[str, str | None]:
    return {path.name: file_version(path) for path, _ in files}


@dataclass(frozen=True)
class PreviousBuild:
    path: Path
    record: SnapshotBuild


def usable_previous(snapshots_dir: Path, lineage: SnapshotLineage | None) -> PreviousBuild | None:
    """The previous snapshot to start from, or None when only a full build is right (CorruptState when the
    build record is damaged)."""
    if lineage is None or lineage.full:
        return None
    record = read_build_record(snapshots_dir)
    if record is None:
        return None
    previous = snapshots_dir / record.file
    latest = snapshots_dir / "latest.duckdb"
    if not previous.is_file() or not latest.is_file() or previous.stat().st_ino != latest.stat().st_ino:
        return None
    if record.events_token is None or record.members_version is None:
        return None
    events_ok = record.events_token in (lineage.events_token_before, lineage.events_token)
    if record.events_token == lineage.events_token_before and lineage.events_token_before != lineage.events_token:
        events_ok = lineage.new_events is not None
    members_ok = record.members_version == lineage.members_version or (
        record.members_version == lineage.members_version_before and lineage.changed_members is not None
    )
    return PreviousBuild(previous, record) if events_ok and members_ok else None


def write_record(snapshots_dir: Path, final: Path, lineage: SnapshotLineage | None, history: dict[str, Any]) -> None:
    """Describe the snapshot just swapped in (written after the swap: a crash in between leaves a record
    naming another file, which only costs a full build)."""
    record = SnapshotBuild(
        file=final.name,
        events_token=lineage.events_token if lineage else None,
        members_version=lineage.members_version if lineage else None,
        whop_access_source=lineage.whop_access_source if lineage else None,
        history=history,
    )
    write_document(snapshots_dir / BUILD_NAME, SNAPSHOT_BUILD, record)


def read_build_record(snapshots_dir: Path) -> SnapshotBuild | None:
    """What the latest snapshot was built from (None: no record, a full build follows)."""
    return read_document(snapshots_dir / BUILD_NAME, SNAPSHOT_BUILD)


def copy_for_update(previous: Path, tmp: Path) -> None:
    """A writable copy of the (read-only) previous snapshot under the tmp name."""
    shutil.copyfile(previous, tmp)  # sendfile in the kernel on Linux
    os.chmod(tmp, 0o644)
