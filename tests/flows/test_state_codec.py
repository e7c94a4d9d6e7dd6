"""The state codec: every document kind round-trips; the files memberpulse 0.2.0 wrote (no format header) are read
as they are; missing optional files are not damage; a damaged Parquet table is named, with its remedy, through
the real reading path of each store."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from memberpulse.contracts.raw_record import archive_path, raw_archive_dir
from memberpulse.contracts.tables import WEBHOOK_DELIVERIES
from memberpulse.errors import CorruptState
from memberpulse.flows.publish._targets import TargetState
from memberpulse.flows.raw.archive import archived_segments
from memberpulse.flows.reconcile._store import Manifest, ReconcileStore
from memberpulse.flows.recover import RecoveryStore
from memberpulse.flows.snapshot._incremental import read_build_record
from memberpulse.flows.state_codec import (
    DOCUMENT_KINDS,
    EVENT_LOG,
    RECONCILE_MANIFEST,
    SNAPSHOT_BUILD,
    STATE_FORMAT,
    BackfillManifest,
    BackfillState,
    CachedFile,
    CompanyFailureRecord,
    RecoveryState,
    RemoteCopies,
    SnapshotBuild,
    StateCache,
    StateLease,
    StateTree,
    TargetMeta,
    TreeEntry,
    check_table,
    query_tables,
    read_document,
    read_table,
    table_rows,
    write_document,
    write_table,
)
from memberpulse.flows.whop import ParquetSink, SnapshotWriter, list_snapshots
from memberpulse.flows.whop._snapshot import SCHEMAS
from tests.support.reconcile_testkit import AS_OF

SAMPLES: dict[str, Any] = {
    "reconcile-manifest": Manifest(
        run_id="r1", offsets={"dt=2026-11-27/w-1.ndjson": 30}, checksums={"dt=2026-11-27/w-1.ndjson": 2 ** 32 - 1},
        as_of=AS_OF.isoformat(), change_seq=4,
        lineage="abc", event_files=["events/r1.parquet"], fold_settings={"include_test_webhooks": "false"},
    ),
    "publish-target": TargetMeta(failures_sent=3, as_of=AS_OF.isoformat(), change_token="abc/4", scoring=[7.0, 7, 30]),
    "recovery-state": RecoveryState(stopped_at=AS_OF.isoformat(), index_offsets={"dt=2026-11-27/w-1.ndjson": 30}),
    "snapshot-build": SnapshotBuild(file="a.duckdb", events_token="abc/4", history={"h.parquet": "1:2:3"}),
    "backfill-manifest": BackfillManifest(fetched_at="2026-11-27T12:00:00Z", company_id="biz", counts={"members": 2}),
    "state-tree": StateTree(files={"warehouse/a": TreeEntry(key="state/objects/ab", size=2, sha256="ab")}, run_id="r1"),
    "state-lease": StateLease(holder="h", command="run", acquired_at=AS_OF.isoformat(), expires_at=AS_OF.isoformat()),
    "state-cache": StateCache(tree_version="v1", files={"warehouse/a": CachedFile(sha256="ab", size=2, mtime_ns=5)}),
    "remote-copies": RemoteCopies(versions={"analytics/latest.duckdb": "e1"}),
    "backfill-state": BackfillState(round_started_at=AS_OF.isoformat(), failed={"biz_b": CompanyFailureRecord(
        reason="Whop refused access to company biz_b (403)", kind="configuration", failed_at=AS_OF.isoformat())}),
}  # fmt: skip


@pytest.mark.parametrize("kind", DOCUMENT_KINDS, ids=lambda kind: kind.name)
def test_every_document_kind_round_trips_under_a_header(kind: Any, tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    write_document(path, kind, SAMPLES[kind.name])

    stored = json.loads(path.read_text())
    assert stored["kind"] == kind.name and stored["format"] == STATE_FORMAT
    assert read_document(path, kind) == SAMPLES[kind.name]
    assert {k.name for k in DOCUMENT_KINDS} == set(SAMPLES)  # a new kind needs a sample here


def test_a_document_of_another_kind_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    write_document(path, SNAPSHOT_BUILD, SAMPLES["snapshot-build"])

    with pytest.raises(CorruptState, match="holds a 'snapshot-build' document, not a 'reconcile-manifest' one"):
        read_document(path, RECONCILE_MANIFEST)


def test_writing_the_wrong_document_for_a_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_document(tmp_path / "x.json", RECONCILE_MANIFEST, SAMPLES["snapshot-build"])
    assert not (tmp_path / "x.json").exists()


# --- what memberpulse 0.2.0 wrote (format 1: no header) is read as it is -----------------------------------------

LEGACY_MANIFEST = {
    "as_of": "2026-11-27T12:00:00+00:00", "backfills_folded": [], "change_seq": 2, "committed_at":
    "2026-11-27T12:00:01+00:00", "event_files": ["events/r1.parquet"], "fold_settings": {}, "lineage": "abc",
    "offsets": {"dt=2026-11-27/w-1.ndjson": 30}, "quarantine_offsets": {}, "reject_files": [], "run_id": "r1",
    "state_file": "state/r1.parquet", "version": 1,
}  # fmt: skip


def _legacy(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, sort_keys=True))
    return path


def test_a_0_2_0_reconcile_manifest_is_read_and_rewritten_in_the_current_format(tmp_path: Path) -> None:
    store = ReconcileStore(tmp_path / "warehouse")
    _legacy(store.manifest_path, LEGACY_MANIFEST)

    manifest = store.load_manifest()
    assert manifest.change_token == "abc/2" and manifest.offsets == {"dt=2026-11-27/w-1.ndjson": 30}
    assert manifest.state_file == "state/r1.parquet" and manifest.as_of_time == AS_OF
    store.commit(manifest)
    stored = json.loads(store.manifest_path.read_text())
    assert stored["format"] == STATE_FORMAT and "version" not in stored
    assert store.load_manifest().with_(committed_at=None) == manifest.with_(committed_at=None)


# The manifest as the v0.2.0 tag writes it (format 3): no checksums of the segments it read.
FORMAT_3_MANIFEST = {
    **{k: v for k, v in LEGACY_MANIFEST.items() if k != "version"},
    "kind": "reconcile-manifest",
    "format": 3,
}


def test_a_format_3_reconcile_manifest_is_read_knowing_no_checksums_and_rewritten_in_the_current_format(
    tmp_path: Path,
) -> None:
    store = ReconcileStore(tmp_path / "warehouse")
    _legacy(store.manifest_path, FORMAT_3_MANIFEST)

    manifest = store.load_manifest()
    assert manifest.checksums == {} and manifest.offsets == {"dt=2026-11-27/w-1.ndjson": 30}  # trusted, unchecked
    assert manifest.change_token == "abc/2" and manifest.as_of_time == AS_OF
    store.commit(manifest.with_(checksums={"dt=2026-11-27/w-2.ndjson": 0xFFFFFFFF}))
    stored = json.loads(store.manifest_path.read_text())
    assert (stored["format"], stored["checksums"]) == (STATE_FORMAT, {"dt=2026-11-27/w-2.ndjson": 0xFFFFFFFF})


def test_a_format_3_manifest_holding_checksums_is_damage(tmp_path: Path) -> None:
    store = ReconcileStore(tmp_path / "warehouse")
    _legacy(store.manifest_path, {**FORMAT_3_MANIFEST, "checksums": {"dt=2026-11-27/w-1.ndjson": 7}})

    with pytest.raises(CorruptState, match="no format-3 manifest kept") as raised:
        store.load_manifest()
    assert raised.value.hint is not None and "--full-refresh" in raised.value.hint


def test_0_2_0_publish_target_states_are_read_with_the_fields_earlier_releases_kept(tmp_path: Path) -> None:
    target = TargetState(tmp_path / "warehouse", "postgres-0123456789abcdef")
    legacy = {"failures_sent": 3, "as_of": AS_OF.isoformat(), "change_token": "abc/2", "scoring": [7.0, 7.0, 30.0]}
    _legacy(target.meta_path, {**legacy, "change_seq": 2, "version": "0.1.0", "extra": {}})  # fields since dropped

    assert target.load_meta() == TargetMeta(3, AS_OF.isoformat(), "abc/2", [7.0, 7.0, 30.0])


def test_a_0_2_0_recovery_state_is_read(tmp_path: Path) -> None:
    store = RecoveryStore(tmp_path / "warehouse", tmp_path / "landing", tmp_path / "quarantine")
    legacy = RecoveryState(stopped_at=AS_OF.isoformat(), index_offsets={"a": 1}, recovered=2, failed_attempts=1)
    store.state_path.parent.mkdir(parents=True)
    store.state_path.write_text(json.dumps(asdict(legacy), indent=2))

    assert store.load_state() == legacy


def test_a_format_4_recovery_state_holds_for_the_one_webhook_it_read_until_webhooks_are_kept_apart(
    tmp_path: Path,
) -> None:
    """Format 4 kept one ``stopped_at``, of the one webhook a recovery read: the first recovery after the upgrade
    reads its webhook from there; from format 5 on each webhook stands where its own log was read up to."""
    store = RecoveryStore(tmp_path / "warehouse", tmp_path / "landing", tmp_path / "quarantine")
    format_4 = {"kind": "recovery-state", "format": 4, "stopped_at": AS_OF.isoformat(), "index_offsets": {"a": 1}}
    store.state_path.parent.mkdir(parents=True)
    store.state_path.write_text(json.dumps(format_4))

    upgraded = store.load_state()
    assert upgraded.hooks == {} and upgraded.hook_stopped_at("hook_any") == AS_OF
    later = RecoveryState(stopped_at=AS_OF.isoformat(), hooks={"hook_a": (AS_OF + timedelta(hours=1)).isoformat()})
    assert later.hook_stopped_at("hook_a") == AS_OF + timedelta(hours=1) and later.hook_stopped_at("hook_new") is None


def test_a_delivery_log_kept_before_company_id_reads_with_it_null_and_takes_new_attempts(tmp_path: Path) -> None:
    """0.3's ``deliveries.parquet`` had no ``company_id``: its attempts read with none, and the next recovery's
    attempts (with their company) are merged into it."""
    store = RecoveryStore(tmp_path / "warehouse", tmp_path / "landing", tmp_path / "quarantine")
    attempt = {"delivery_id": "whdel_old", "event": "membership.activated", "webhook_id": "msg_1",
               "sent_at": datetime.now(UTC) - timedelta(hours=1), "response_code": 200, "success": True,
               "total_time": 0.1, "replayed_from": None}  # fmt: skip
    old_layout = {name: dtype for name, dtype in WEBHOOK_DELIVERIES.schema.items() if name != "company_id"}
    store.root.mkdir(parents=True)
    pl.DataFrame([attempt], schema=old_layout).write_parquet(store.deliveries_path)

    assert store.deliveries().columns == list(WEBHOOK_DELIVERIES.names)
    assert store.deliveries().row(0, named=True) == {**attempt, "company_id": None}
    new = pl.DataFrame([{**attempt, "delivery_id": "whdel_new", "company_id": "biz_a"}], WEBHOOK_DELIVERIES.schema)
    store.commit(RecoveryState(), pl.DataFrame(schema={"webhook_id": pl.String, "landed": pl.Boolean}), [], new)
    assert dict(store.deliveries().select("delivery_id", "company_id").iter_rows()) == {
        "whdel_old": None,
        "whdel_new": "biz_a",
    }


def test_0_2_0_build_records_and_backfill_manifests_are_read(tmp_path: Path) -> None:
    build = {"events_token": "abc/2", "file": "a.duckdb", "format": 1, "history": {"h.parquet": None},
             "members_version": "1:2:3", "whop_access_source": None}  # fmt: skip
    _legacy(tmp_path / "snapshots" / ".build.json", build)
    assert read_build_record(tmp_path / "snapshots") == SnapshotBuild(
        file="a.duckdb", events_token="abc/2", members_version="1:2:3", history={"h.parquet": None}
    )

    folder = tmp_path / "warehouse" / "backfill" / "20261127T120000000000Z"
    _legacy(folder / "_SUCCESS", {
        "company_id": "biz", "counts": {"members": 0, "memberships": 0}, "fetched_at": "2026-11-27T12:00:00Z",
        "files": {"members": "members.parquet", "memberships": "memberships.parquet"}, "format": 1,
        "pages": {"members": 1, "memberships": 1}, "written_at": "2026-11-27T12:00:05Z",
    })  # fmt: skip
    [snapshot] = list_snapshots(tmp_path / "warehouse")
    assert snapshot.fetched_at == AS_OF and snapshot.company_id == "biz" and snapshot.counts["members"] == 0


def test_missing_optional_state_is_not_damage(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    recovery = RecoveryStore(warehouse, tmp_path / "landing", tmp_path / "quarantine")

    assert ReconcileStore(warehouse).load_manifest() == Manifest()
    assert TargetState(warehouse, "postgres-0123456789abcdef").load_meta() == TargetMeta()
    assert recovery.load_state() == RecoveryState()
    assert recovery.known_ids(RecoveryState())[0].height == 0 and recovery.deliveries().height == 0
    assert read_build_record(tmp_path / "snapshots") is None and list_snapshots(warehouse) == []
    assert not warehouse.exists()  # reading wrote nothing


# --- damaged tables, through each store's own reading path ------------------------------------------------------


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _recovery_store(root: Path) -> RecoveryStore:
    store = RecoveryStore(root / "warehouse", root / "landing", root / "quarantine")
    known = pl.DataFrame({"webhook_id": ["msg_1"], "landed": [True]})
    store.commit(RecoveryState(), known, ["msg_2"], WEBHOOK_DELIVERIES.schema.to_frame())
    return store


def _recovery_index(root: Path) -> tuple[Path, Callable[[], object]]:
    store = _recovery_store(root)
    return _truncate(store.known_path), lambda: store.known_ids(store.load_state())


def _recovery_deliveries(root: Path) -> tuple[Path, Callable[[], object]]:
    store = _recovery_store(root)
    return _truncate(store.deliveries_path), store.deliveries


def _backfill(root: Path) -> tuple[Path, Callable[[], object]]:
    with SnapshotWriter(root / "warehouse", fetched_at=AS_OF, company_id="biz") as writer:
        for resource, schema in SCHEMAS.items():
            ParquetSink(writer.path_for(resource), schema).close()
        snapshot = writer.commit()
    return _truncate(snapshot.memberships_path), snapshot.read_memberships


def _history(root: Path) -> tuple[Path, Callable[[], object]]:
    store, scored = ReconcileStore(root / "warehouse"), pl.DataFrame({"membership_id": ["mem_1"], "score": [50]})
    first = store.write_history(AS_OF, scored)
    return _truncate(first), lambda: store.write_history(AS_OF + timedelta(minutes=5), scored, state_changed=False)


def _event_log(root: Path) -> tuple[Path, Callable[[], object]]:
    store, events = ReconcileStore(root / "warehouse"), pl.DataFrame({"webhook_id": ["msg_1", "msg_2"]})
    files = [store.stage_frame("events", name, events) for name in ("r1", "r2")]
    manifest = Manifest(event_files=files)
    return _truncate(store.root / files[1]), lambda: store.drop_known_events(manifest, events)


def _raw_archive(root: Path) -> tuple[Path, Callable[[], object]]:
    path = archive_path(raw_archive_dir(root / "landing"), date(2026, 11, 1))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 not a parquet file")
    return path, lambda: archived_segments(root / "landing")


TABLES: dict[str, tuple[Callable[[Path], tuple[Path, Callable[[], object]]], str]] = {
    "recovery index": (_recovery_index, "delete the warehouse/recovery folder"),
    "recovered delivery log": (_recovery_deliveries, "delete the warehouse/recovery folder"),
    "backfill file": (_backfill, "run `memberpulse backfill`"),
    "history file": (_history, "delete it: only that run's rows"),
    "event log file": (_event_log, "memberpulse run --full-refresh"),
    "raw archive file": (_raw_archive, "restore it from a backup"),
}


@pytest.mark.parametrize("name", list(TABLES))
def test_a_damaged_table_is_named_with_its_remedy(name: str, tmp_path: Path) -> None:
    make, remedy = TABLES[name]
    path, read = make(tmp_path)

    with pytest.raises(CorruptState) as raised:
        read()
    assert raised.value.path == str(path) and f"{path} is damaged" in raised.value.message
    assert raised.value.hint is not None and remedy in raised.value.hint


def test_tables_are_read_by_their_exact_path_even_with_glob_characters(tmp_path: Path) -> None:
    """A data dir's path may hold ``[``: it is never taken for a glob pattern."""
    path = tmp_path / "data[1]" / "t.parquet"
    frame = pl.DataFrame({"webhook_id": ["a", "b"]})
    write_table(frame, path)

    assert read_table(path, EVENT_LOG).equals(frame) and table_rows(path, EVENT_LOG) == 2
    assert query_tables([path], EVENT_LOG, lambda rows: rows.filter(pl.col("webhook_id") == "b")).height == 1
    check_table(path, EVENT_LOG)
