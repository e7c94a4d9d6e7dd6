"""The state tree's commit is the fence: of two runs started from the same tree only the first commits, unless
their changes are disjoint (a backfill's new folder beside a reconcile run's commit): then both stand."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from memberpulse.errors import RunInProgress
from memberpulse.flows.statestore import read_tree
from memberpulse.flows.statestore._tree import OBJECTS_PREFIX, collect_garbage, commit_tree, fetch_tree
from memberpulse.storage import ObjectStore, StorageUrl


def _host(tmp_path: Path, name: str, files: dict[str, bytes]) -> Path:
    data_dir = tmp_path / name
    for rel, data in files.items():
        (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / rel).write_bytes(data)
    return data_dir


@pytest.fixture
def store(storage_env: dict[str, str]) -> ObjectStore:
    return ObjectStore.open(StorageUrl.parse(storage_env["MEMBERPULSE_STORAGE_URL"]))


def _commit(store: ObjectStore, data_dir: Path, base: object, command: str) -> str | None:
    return commit_tree(store, data_dir, base, run_id=command, command=command, holder=command).version  # type: ignore[arg-type]


def test_disjoint_changes_are_applied_on_top_of_the_winner(tmp_path: Path, store: ObjectStore) -> None:
    seed = _host(tmp_path, "seed", {"warehouse/reconcile/manifest.json": b"m0"})
    assert _commit(store, seed, read_tree(store), "run") is not None
    base = read_tree(store)
    run = _host(tmp_path, "run", {})
    backfill = _host(tmp_path, "backfill", {})
    fetch_tree(store, run, base)
    fetch_tree(store, backfill, base)
    (run / "warehouse/reconcile/manifest.json").write_bytes(b"m1")
    (backfill / "warehouse/backfill/20261127T120000000000Z/_SUCCESS").parent.mkdir(parents=True)
    (backfill / "warehouse/backfill/20261127T120000000000Z/_SUCCESS").write_bytes(b"done")

    assert _commit(store, run, base, "run") is not None
    merged = commit_tree(store, backfill, base, run_id="b", command="backfill", holder="b")
    assert merged.merged and merged.version is not None
    files = read_tree(store).tree.files
    assert (
        files["warehouse/reconcile/manifest.json"].size == 2
        and "warehouse/backfill/20261127T120000000000Z/_SUCCESS" in files
    )

    fetch_tree(store, backfill, read_tree(store))  # the cache then takes the winner's files
    assert (backfill / "warehouse/reconcile/manifest.json").read_bytes() == b"m1"


def test_overlapping_changes_lose_and_commit_nothing(tmp_path: Path, store: ObjectStore) -> None:
    seed = _host(tmp_path, "seed", {"warehouse/reconcile/manifest.json": b"m0"})
    _commit(store, seed, read_tree(store), "run")
    base = read_tree(store)
    first, second = _host(tmp_path, "a", {}), _host(tmp_path, "b", {})
    for data_dir, text in ((first, b"a"), (second, b"b")):
        fetch_tree(store, data_dir, base)
        (data_dir / "warehouse/reconcile/manifest.json").write_bytes(text)
    _commit(store, first, base, "run")
    with pytest.raises(RunInProgress, match="committed nothing"):
        _commit(store, second, base, "run")
    assert read_tree(store).tree.files["warehouse/reconcile/manifest.json"].size == 1
    fetch_tree(store, second, read_tree(store))  # the loser's cache is made equal to the tree again
    assert (second / "warehouse/reconcile/manifest.json").read_bytes() == b"a"


def test_objects_no_tree_references_are_deleted_only_after_the_grace_period(tmp_path: Path, store: ObjectStore) -> None:
    host = _host(tmp_path, "host", {"warehouse/reconcile/manifest.json": b"old"})
    _commit(store, host, read_tree(store), "run")
    (host / "warehouse/reconcile/manifest.json").write_bytes(b"new")
    _commit(store, host, read_tree(store), "run")
    tree = read_tree(store).tree
    assert len(list(store.list(OBJECTS_PREFIX))) == 2

    assert collect_garbage(store, tree, grace=timedelta(days=1)) == 0  # a run may still be fetching it
    assert collect_garbage(store, tree, grace=timedelta(0)) == 1
    assert [info.key for info in store.list(OBJECTS_PREFIX)] == [entry.key for entry in tree.files.values()]
