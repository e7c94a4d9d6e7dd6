"""The backfill snapshot store: exact schemas, atomic publish, no partial snapshot, stale tmp cleanup."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from whop_sdk import Membership

from memberpulse.errors import InvalidInput, WhopGaveUp
from memberpulse.flows.backfill import fetch_resource
from memberpulse.flows.whop import (
    ParquetSink,
    SnapshotWriter,
    backfill_dir,
    clean_stale_tmp,
    latest_snapshot,
    latest_snapshots,
    list_snapshots,
    members_batch,
    memberships_batch,
)
from memberpulse.flows.whop._records import Resource
from memberpulse.flows.whop._snapshot import SCHEMAS
from memberpulse.settings import Settings
from memberpulse.whop_simulator._app import _member_json, _membership_json
from tests.support.whop_testkit import COMPANY_ID, POPULATION_SIZE, Simulator

UTC_US = pl.Datetime("us", "UTC")
MEMBERSHIPS_COLUMNS = {
    "membership_id": pl.String,
    "company_id": pl.String,
    "user_id": pl.String,
    "member_id": pl.String,
    "product_id": pl.String,
    "status": pl.String,
    "created_at": UTC_US,
    "updated_at": UTC_US,
    "canceled_at": UTC_US,
    "username": pl.String,
    "name": pl.String,
    "email": pl.String,
    "fetched_at": UTC_US,
}
MEMBERS_COLUMNS = {
    "member_id": pl.String,
    "user_id": pl.String,
    "username": pl.String,
    "name": pl.String,
    "email": pl.String,
    "status": pl.String,
    "joined_at": UTC_US,
    "last_accessed_at": UTC_US,
    "most_recent_action_at": UTC_US,
    "fetched_at": UTC_US,
}


def backfill_into_snapshot(settings: Settings, fetched_at: datetime) -> Path:
    with SnapshotWriter(settings.warehouse_dir, fetched_at=fetched_at, company_id=COMPANY_ID) as writer:
        fetch_resource("memberships", settings, writer.tmp_dir, fetched_at)
        fetch_resource("members", settings, writer.tmp_dir, fetched_at)
        return writer.commit().path


def _sink(writer: SnapshotWriter, resource: Resource) -> ParquetSink:
    return ParquetSink(writer.path_for(resource), SCHEMAS[resource])


@pytest.mark.slow
def test_snapshot_has_the_contract_schemas_and_whops_values(simulator: Simulator, settings: Settings) -> None:
    fetched_at = datetime(2026, 11, 27, 12, 30, 1, 123456, tzinfo=UTC)
    path = backfill_into_snapshot(settings, fetched_at)

    assert path == backfill_dir(settings.warehouse_dir) / COMPANY_ID / "20261127T123001123456Z"
    assert sorted(p.name for p in path.iterdir()) == ["_SUCCESS", "members.parquet", "memberships.parquet"]
    manifest = json.loads((path / "_SUCCESS").read_text())
    assert manifest["fetched_at"] == "2026-11-27T12:30:01.123456Z"
    assert manifest["company_id"] == COMPANY_ID
    assert manifest["counts"] == {"memberships": POPULATION_SIZE, "members": POPULATION_SIZE}

    snapshot = latest_snapshot(settings.warehouse_dir)
    assert snapshot is not None and snapshot.path == path and snapshot.fetched_at == fetched_at
    memberships = snapshot.read_memberships()
    members = snapshot.read_members()
    assert dict(memberships.schema) == MEMBERSHIPS_COLUMNS
    assert dict(members.schema) == MEMBERS_COLUMNS

    population = simulator.population
    expected_memberships = pl.DataFrame(
        {
            "membership_id": [m.id for m in population.memberships],
            "status": [m.status for m in population.memberships],
            "created_at": [m.created_at for m in population.memberships],
            "canceled_at": [m.canceled_at for m in population.memberships],
            "email": [m.user.email for m in population.memberships],
        },
        schema={
            "membership_id": pl.String,
            "status": pl.String,
            "created_at": UTC_US,
            "canceled_at": UTC_US,
            "email": pl.String,
        },
    )
    assert memberships.select(expected_memberships.columns).equals(expected_memberships)
    expected_members = pl.DataFrame(
        {
            "member_id": [m.id for m in population.members],
            "user_id": [m.user.id for m in population.members],
            "last_accessed_at": [m.last_accessed_at for m in population.members],
        },
        schema={"member_id": pl.String, "user_id": pl.String, "last_accessed_at": UTC_US},
    )
    assert members.select(expected_members.columns).equals(expected_members)
    assert members["last_accessed_at"].null_count() < POPULATION_SIZE  # activity came through
    assert memberships["fetched_at"].unique().to_list() == [fetched_at]
    assert members["fetched_at"].unique().to_list() == [fetched_at]


@pytest.mark.slow
def test_a_failed_backfill_leaves_no_partial_snapshot(simulator: Simulator, settings: Settings) -> None:
    first = backfill_into_snapshot(settings, datetime(2026, 11, 27, 1, tzinfo=UTC))
    simulator.faults.server_error(None, status=500, endpoint="members", after=2)  # members page 3: forever

    with pytest.raises(WhopGaveUp):
        backfill_into_snapshot(settings, datetime(2026, 11, 27, 2, tzinfo=UTC))

    root = backfill_dir(settings.warehouse_dir)
    assert [p.name for p in root.iterdir()] == [COMPANY_ID]  # no tmp dir
    assert [p.name for p in (root / COMPANY_ID).iterdir()] == [first.name]  # no second snapshot
    latest = latest_snapshot(settings.warehouse_dir)
    assert latest is not None and latest.path == first


def test_list_snapshots_sees_only_complete_ones_oldest_first(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    assert latest_snapshot(warehouse) is None and list_snapshots(warehouse) == []
    times = [datetime(2026, 11, day, tzinfo=UTC) for day in (3, 1, 2)]
    for t in times:
        with SnapshotWriter(warehouse, fetched_at=t, company_id=COMPANY_ID) as writer:
            _sink(writer, "memberships").close()
            _sink(writer, "members").close()
            writer.commit()
    root = backfill_dir(warehouse)
    (root / COMPANY_ID / "20261130T000000000000Z").mkdir()  # a dir without _SUCCESS is not a snapshot
    (root / "20261130T000000000000Z").mkdir()  # nor in the older layout
    (root / ".tmp-abandoned").mkdir()

    snapshots = list_snapshots(warehouse)
    assert [s.fetched_at for s in snapshots] == sorted(times)
    assert all(s.counts == {"memberships": 0, "members": 0} for s in snapshots)
    latest = latest_snapshot(warehouse)
    assert latest is not None and latest.fetched_at == max(times)
    assert latest.read_memberships().is_empty() and dict(latest.read_members().schema) == MEMBERS_COLUMNS


def test_clean_stale_tmp_removes_only_abandoned_dirs(tmp_path: Path) -> None:
    root = backfill_dir(tmp_path)
    stale, fresh = root / ".tmp-stale", root / ".tmp-fresh"
    for d in (stale, fresh):
        d.mkdir(parents=True)
        (d / "memberships.parquet").write_bytes(b"partial")
    old = time.time() - 7200
    for p in (stale / "memberships.parquet", stale):
        os.utime(p, (old, old))

    assert clean_stale_tmp(tmp_path, older_than_seconds=3600) == [stale]
    assert not stale.exists() and fresh.exists()


def test_writer_aborts_on_error(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        SnapshotWriter(tmp_path, fetched_at=datetime.now(UTC), company_id=COMPANY_ID) as writer,
    ):
        _sink(writer, "memberships").close()
        raise RuntimeError("boom")
    assert not writer.tmp_dir.exists() and list(backfill_dir(tmp_path).iterdir()) == []  # not even a company folder


@pytest.mark.slow
def test_memberships_without_a_user_object_get_it_from_members(simulator: Simulator, tmp_path: Path) -> None:
    """whop-sdk's ``Membership`` has no user; when Whop leaves it out, the snapshot fills it from members."""
    population = simulator.population
    fetched_at = datetime(2026, 11, 27, tzinfo=UTC) + timedelta(hours=1)
    bare = []
    for m in population.memberships[:20]:
        payload = _membership_json(m)
        del payload["user"]
        bare.append(Membership.model_validate(payload))
    members = [_member_json(m) for m in population.members[:20]]
    from whop_sdk import Member

    with SnapshotWriter(tmp_path, fetched_at=fetched_at, company_id=COMPANY_ID) as writer:
        sink = _sink(writer, "memberships")
        sink.write(memberships_batch(bare, company_id=COMPANY_ID, fetched_at=fetched_at))
        sink.close()
        sink = _sink(writer, "members")
        sink.write(members_batch([Member.model_validate(m) for m in members], fetched_at=fetched_at))
        sink.close()
        snapshot = writer.commit()

    frame = snapshot.read_memberships()
    assert dict(frame.schema) == MEMBERSHIPS_COLUMNS
    assert frame["username"].to_list() == [m.user.username for m in population.memberships[:20]]
    assert frame["email"].to_list() == [m.user.email for m in population.memberships[:20]]
    assert frame["membership_id"].to_list() == [m.id for m in population.memberships[:20]]


def test_a_snapshot_is_never_overwritten(tmp_path: Path) -> None:
    fetched_at = datetime(2026, 11, 27, 9, tzinfo=UTC)
    for attempt in range(2):
        with SnapshotWriter(tmp_path, fetched_at=fetched_at, company_id=COMPANY_ID) as writer:
            _sink(writer, "memberships").close()
            _sink(writer, "members").close()
            if attempt == 0:
                first = writer.commit()
            else:
                with pytest.raises(InvalidInput, match="already exists"):
                    writer.commit()
    assert [s.path for s in list_snapshots(tmp_path)] == [first.path]
    assert [p.name for p in (backfill_dir(tmp_path) / COMPANY_ID).iterdir()] == [first.path.name]


def _empty_snapshot(warehouse: Path, company_id: str, fetched_at: datetime) -> Path:
    with SnapshotWriter(warehouse, fetched_at=fetched_at, company_id=company_id) as writer:
        _sink(writer, "memberships").close()
        _sink(writer, "members").close()
        return writer.commit().path


def test_a_0_2_0_snapshot_folder_is_read_beside_the_per_company_ones(tmp_path: Path) -> None:
    """memberpulse 0.2.0 wrote ``backfill/<fetched_at>/`` for its one company: it is still that company's latest
    until a newer fetch of it, and keeps the key the reconcile manifest remembers it by."""
    warehouse, day = tmp_path / "warehouse", datetime(2026, 11, 27, tzinfo=UTC)
    legacy = _empty_snapshot(warehouse, COMPANY_ID, day)
    legacy = legacy.rename(backfill_dir(warehouse) / legacy.name)  # where 0.2.0 kept it
    (backfill_dir(warehouse) / COMPANY_ID).rmdir()
    other = _empty_snapshot(warehouse, "biz_other", day + timedelta(hours=1))

    assert [(s.company_id, s.path) for s in latest_snapshots(warehouse)] == [(COMPANY_ID, legacy), ("biz_other", other)]
    assert [s.key for s in list_snapshots(warehouse)] == [legacy.name, f"biz_other/{other.name}"]
    assert [s.key for s in list_snapshots(warehouse, leaving_out={legacy.name})] == [f"biz_other/{other.name}"]

    newer = _empty_snapshot(warehouse, COMPANY_ID, day + timedelta(hours=2))
    assert {s.company_id: s.path for s in latest_snapshots(warehouse)} == {COMPANY_ID: newer, "biz_other": other}
    assert latest_snapshot(warehouse) is not None and latest_snapshot(warehouse).path == newer  # type: ignore[union-attr]


def test_a_company_whose_newest_fetch_never_finished_keeps_its_previous_one(tmp_path: Path) -> None:
    warehouse, day = tmp_path / "warehouse", datetime(2026, 11, 27, tzinfo=UTC)
    done = _empty_snapshot(warehouse, COMPANY_ID, day)
    (backfill_dir(warehouse) / COMPANY_ID / "20261128T000000000000Z").mkdir()  # killed before its _SUCCESS
    assert [s.path for s in latest_snapshots(warehouse)] == [done]
