"""A backfill on one host, folded by a run on another: the backfill's folder reaches the others only through
the state tree (moto's S3 server as the named S3 stand-in, the Whop API simulator on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from memberpulse.flows.backfill import backfill
from memberpulse.flows.statestore import read_tree, shared_state
from memberpulse.flows.whop import list_snapshots
from memberpulse.storage import open_store
from tests.support.whop_testkit import Simulator, make_settings


@pytest.mark.slow  # the Whop API simulator's server
def test_a_backfill_on_one_host_is_in_the_tree_and_fetched_by_the_next(
    tmp_path: Path, simulator: Simulator, storage_env: dict[str, str]
) -> None:
    url = storage_env["MEMBERPULSE_STORAGE_URL"]
    fetching = make_settings(tmp_path / "backfill-host", simulator.base_url, MEMBERPULSE_STORAGE_URL=url)
    result = backfill(fetching)
    assert result.status == "written" and result.snapshot is not None
    store = open_store(fetching)
    assert store is not None
    committed = read_tree(store).tree
    assert committed.command == "backfill"
    folder = result.snapshot.path.relative_to(fetching.data_dir).as_posix()
    assert f"{folder}/_SUCCESS" in committed.files

    worker = make_settings(tmp_path / "worker", simulator.base_url, MEMBERPULSE_STORAGE_URL=url)
    with shared_state(worker, "run", write=False) as session:
        assert session is not None and session.fetched.fetched >= 3  # the manifest and both tables
        assert [s.path.name for s in list_snapshots(worker.warehouse_dir)] == [result.snapshot.path.name]
