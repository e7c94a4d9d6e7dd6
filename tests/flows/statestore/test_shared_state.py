"""The shared state in object storage (moto's S3 server, the named S3 stand-in): a run with the storage URL set
ends where a local run does, the local data dir is only a cache, and the analysts read from the store."""

from __future__ import annotations

import shutil
import threading
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from memberpulse.cli import main
from memberpulse.errors import RunInProgress
from memberpulse.flows.reconcile import one_off_run
from memberpulse.flows.state_codec import STATE_TREE, TreeEntry, decode_document
from memberpulse.flows.statestore import (
    LATEST_KEY,
    PARQUET_PREFIX,
    REPORT_KEY,
    TREE_KEY,
    analysts_snapshots_dir,
    fetch_analytics,
    read_tree,
    shared_state,
)
from memberpulse.landing.shipper import Shipper, sources_for
from memberpulse.settings import Settings
from memberpulse.storage import open_store
from tests.support.reconcile_testkit import (
    AS_OF,
    COMPARED,
    append_raw,
    crowd,
    make_settings,
    scenario,
    snapshot_members,
)


def _shared(data_dir: Path, storage_env: dict[str, str]) -> Settings:
    return make_settings(data_dir, MEMBERPULSE_STORAGE_URL=storage_env["MEMBERPULSE_STORAGE_URL"])


def _forget_cache(data_dir: Path) -> None:
    """Everything the state tree holds, gone from this host (the raw store is the raw side's cache)."""
    for name in ("warehouse", "snapshots", "analytics"):
        shutil.rmtree(data_dir / name, ignore_errors=True)
    (data_dir / ".state-cache.json").unlink(missing_ok=True)


@pytest.mark.parametrize("delete_cache", [False, True], ids=["cache-kept", "cache-deleted"])
def test_runs_with_the_storage_url_end_where_local_runs_do(
    tmp_path: Path, storage_env: dict[str, str], delete_cache: bool
) -> None:
    local = make_settings(tmp_path / "local")
    shared = _shared(tmp_path / "worker", storage_env)
    for settings in (local, shared):
        append_raw(settings.data_dir, scenario())
        one_off_run(settings, as_of=AS_OF, full_refresh=False)
    assert snapshot_members(shared).equals(snapshot_members(local))

    if delete_cache:
        _forget_cache(shared.data_dir)
    for settings in (local, shared):
        append_raw(settings.data_dir, crowd(5, start=10))
        one_off_run(settings, as_of=AS_OF + timedelta(hours=1), full_refresh=False)
    assert snapshot_members(shared).equals(snapshot_members(local))
    assert snapshot_members(shared).height == 9

    store = open_store(shared)
    assert store is not None
    found = store.get(TREE_KEY)
    assert found is not None
    tree = decode_document(found.data, STATE_TREE, path=Path(TREE_KEY))
    assert "warehouse/reconcile/manifest.json" in tree.files and "snapshots/latest.duckdb" in tree.files
    assert tree.command == "run" and tree.parent is not None  # the second commit replaced the first


def test_a_host_with_a_current_cache_fetches_nothing_and_a_fresh_one_everything(
    tmp_path: Path, storage_env: dict[str, str]
) -> None:
    host_a = _shared(tmp_path / "host-a", storage_env)
    append_raw(host_a.data_dir, scenario())
    one_off_run(host_a, as_of=AS_OF, full_refresh=False)

    with shared_state(host_a, "run") as same_host:
        one_off_run(host_a, as_of=AS_OF + timedelta(minutes=5), full_refresh=False)
    assert same_host is not None and same_host.committed is not None
    assert same_host.fetched.fetched == 0 and same_host.fetched.kept > 0
    assert same_host.committed.version is not None and not same_host.committed.merged

    distinct = {entry.sha256 for entry in read_tree_files(host_a).values()}
    host_b = _shared(tmp_path / "host-b", storage_env)
    append_raw(host_b.data_dir, scenario())  # the raw side's cache; here written as host A's was
    with shared_state(host_b, "run") as fresh:
        one_off_run(host_b, as_of=AS_OF + timedelta(minutes=10), full_refresh=False)
    assert fresh is not None and fresh.fetched.kept == 0
    assert fresh.fetched.fetched == len(distinct)  # equal files (latest.duckdb and its name): one download
    assert snapshot_members(host_b).equals(snapshot_members(host_a))


def read_tree_files(settings: Settings) -> dict[str, TreeEntry]:
    store = open_store(settings)
    assert store is not None
    return dict(read_tree(store).tree.files)


def test_sql_and_report_read_the_store_downloading_each_version_once(
    tmp_path: Path, storage_env: dict[str, str]
) -> None:
    worker = _shared(tmp_path / "worker", storage_env)
    append_raw(worker.data_dir, scenario())
    one_off_run(worker, as_of=AS_OF, full_refresh=False)
    store = open_store(worker)
    assert store is not None
    for key in (LATEST_KEY, REPORT_KEY, f"{PARQUET_PREFIX}/member_activity.parquet"):
        assert store.head(key) is not None, key

    analyst = tmp_path / "analyst"
    folder = fetch_analytics(store, analyst)
    assert _members(folder / "latest.duckdb").equals(snapshot_members(worker))
    first = (folder / "latest.duckdb").stat()
    downloads = store.requests["get"]
    assert fetch_analytics(store, analyst) == folder
    again = (folder / "latest.duckdb").stat()
    assert store.requests["get"] == downloads + 1  # one conditional GET, answered 304
    assert (first.st_ino, first.st_mtime_ns) == (again.st_ino, again.st_mtime_ns)  # not written again

    one_off_run(worker, as_of=AS_OF + timedelta(hours=1), full_refresh=False)  # a new version
    fetch_analytics(store, analyst)
    assert (folder / "latest.duckdb").stat().st_ino != first.st_ino
    assert analysts_snapshots_dir(_shared(analyst, storage_env)) == folder


def _members(snapshot: Path) -> pl.DataFrame:
    with duckdb.connect(str(snapshot), read_only=True) as con:
        frame = con.sql("SELECT * FROM member_activity").pl()
    return frame.select(COMPARED).sort("membership_id")


def test_sql_and_report_on_a_machine_with_only_the_storage_url(
    tmp_path: Path, storage_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = _shared(tmp_path / "worker", storage_env)
    append_raw(worker.data_dir, scenario())
    one_off_run(worker, as_of=AS_OF, full_refresh=False)
    capsys.readouterr()

    monkeypatch.setenv("MEMBERPULSE_DATA_DIR", str(tmp_path / "analyst"))  # nothing here but a cache to be
    assert main(["sql", "SELECT count(*) AS members FROM member_activity", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["members", "4"]
    assert main(["sql", "CREATE TABLE t AS SELECT 1"]) == 1  # read-only, as the local snapshot
    report = tmp_path / "report.html"
    assert main(["report", "--out", str(report)]) == 0 and report.stat().st_size > 0
    assert not (tmp_path / "analyst" / "warehouse").exists()  # an analyst's machine holds no state


def test_a_worker_whose_whole_data_dir_is_deleted_between_runs_ends_where_a_local_run_does(
    tmp_path: Path, storage_env: dict[str, str]
) -> None:
    """The raw side's chunks (shipped by a landing replica) and the state tree together: nothing on the worker's
    disk survives from one run to the next."""
    local = make_settings(tmp_path / "local")
    landing_host = tmp_path / "landing-host"
    worker = _shared(tmp_path / "worker", storage_env)
    store = open_store(worker)
    assert store is not None
    shipper = Shipper(
        store,
        sources_for(landing_host / "landing", landing_host / "quarantine"),
        writer="test-writer",
        interval_seconds=1,
    )
    for batch, minutes in ((scenario(), 0), (crowd(5, start=10), 60)):
        append_raw(local.data_dir, batch)
        append_raw(landing_host, batch)
        shipper.ship_once()
        shutil.rmtree(worker.data_dir, ignore_errors=True)
        for settings in (local, worker):
            one_off_run(settings, as_of=AS_OF + timedelta(minutes=minutes), full_refresh=False)
        assert snapshot_members(worker).equals(snapshot_members(local))
    assert snapshot_members(worker).height == 9


@pytest.mark.slow  # Prefect's test harness
@pytest.mark.usefixtures("prefect_harness")
def test_the_deployed_reconcile_flow_commits_the_tree_like_a_cli_run(
    tmp_path: Path, storage_env: dict[str, str]
) -> None:
    from memberpulse.flows.reconcile import reconcile_flow

    local, shared = make_settings(tmp_path / "local"), _shared(tmp_path / "worker", storage_env)
    for settings in (local, shared):
        append_raw(settings.data_dir, scenario())
    one_off_run(local, as_of=AS_OF, full_refresh=False)
    assert reconcile_flow(as_of=AS_OF, settings=shared)["status"] == "completed"
    store = open_store(shared)
    assert store is not None
    assert read_tree(store).tree.command == "run" and store.head(LATEST_KEY) is not None
    _forget_cache(shared.data_dir)
    assert reconcile_flow(settings=shared, only_new=True)["status"] == "skipped"  # the offsets: from the tree
    assert snapshot_members(shared).equals(snapshot_members(local))


def test_two_sessions_on_two_threads_of_one_process_exclude_each_other(
    tmp_path: Path, storage_env: dict[str, str]
) -> None:
    refused: list[BaseException] = []

    def second_session() -> None:
        try:
            with shared_state(_shared(tmp_path / "b", storage_env), "backfill"):
                pass
        except RunInProgress as exc:
            refused.append(exc)

    with shared_state(_shared(tmp_path / "a", storage_env), "run") as first:
        assert first is not None
        other = threading.Thread(target=second_session)
        other.start()
        other.join()
        with shared_state(_shared(tmp_path / "a", storage_env), "run") as nested:
            assert nested is None  # the same thread: the caller's session
    assert len(refused) == 1 and "holds the shared state's lease" in str(refused[0])
