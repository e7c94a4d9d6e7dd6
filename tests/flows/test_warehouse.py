from pathlib import Path

import polars as pl

from memberpulse.flows.warehouse import Manifest, ReconcileStore


def test_commit_is_the_only_thing_that_makes_files_count(tmp_path: Path) -> None:
    store = ReconcileStore(tmp_path)
    assert store.load_manifest() == Manifest()

    first = store.stage_frame("events", "run1", pl.DataFrame({"webhook_id": ["a"]}))
    store.commit(Manifest(run_id="run1", event_files=[first], offsets={"x": 3}))

    # A run that staged files and then died: its files are orphans, the manifest still points at run1.
    store.stage_frame("events", "run2", pl.DataFrame({"webhook_id": ["b"]}))
    assert store.load_manifest().event_files == ["events/run1.parquet"]

    loaded = store.load_manifest()
    assert loaded.offsets == {"x": 3}
    events = store.load_events(loaded)
    assert events is not None and events["webhook_id"].to_list() == ["a"]

    # The next commit removes what no manifest refers to.
    store.commit(loaded.with_(run_id="run3"))
    assert sorted(p.name for p in (store.root / "events").iterdir()) == ["run1.parquet"]

