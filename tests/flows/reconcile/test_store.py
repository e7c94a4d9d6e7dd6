import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memberpulse.flows.reconcile._store import Manifest, ReconcileStore
from memberpulse.flows.snapshot import history_file_time, thin_history


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


def _disk_bytes(folder: Path) -> int:
    """Bytes the folder's files take, each inode counted once (hard links share theirs)."""
    seen = {p.stat().st_ino: p.stat().st_size for p in folder.iterdir()}
    return sum(seen.values())


def _scored(n: int, score: int) -> pl.DataFrame:
    return pl.DataFrame({"membership_id": [f"mem_{i}" for i in range(n)], "status": ["active"] * n,
                         "engagement_score": [score] * n})  # fmt: skip


def test_many_quiet_runs_add_no_history_bytes(tmp_path: Path) -> None:
    store = ReconcileStore(tmp_path)
    start = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    store.write_history(start, _scored(500, 80))
    size = _disk_bytes(store.root / "history")
    for minute in range(1, 40):
        store.write_history(start + timedelta(minutes=minute), _scored(500, 80), state_changed=False)
    assert _disk_bytes(store.root / "history") == size
    assert len(store.history_paths()) == 40  # every run still has its rows for the snapshot
    # Rows that moved are written, even on a quiet run.
    store.write_history(start + timedelta(minutes=41), _scored(500, 79), state_changed=False)
    assert _disk_bytes(store.root / "history") > size
    newest = pl.read_parquet(store.history_paths()[-1])
    assert newest["engagement_score"].to_list() == [79] * 500


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.integers(min_value=1, max_value=60 * 30), min_size=1, max_size=60))
def test_history_on_disk_is_what_the_snapshot_reads_and_stays_bounded(tmp_path: Path, steps: list[int]) -> None:
    """Thinned on every write: exactly thin_history(everything written), at most one file per older day plus
    the last hour's runs."""
    store = ReconcileStore(tmp_path / str(uuid.uuid4()))
    when = datetime(2026, 11, 1, tzinfo=UTC)
    written: list[Path] = []
    for minutes in steps:
        when += timedelta(minutes=minutes)
        written.append(store.write_history(when, _scored(3, minutes % 100)))
        kept = store.history_paths()
        assert kept == sorted(thin_history(written))
        days = {history_file_time(p).date() for p in kept}  # type: ignore[union-attr]
        last_hour = [p for p in kept if history_file_time(p) >= when - timedelta(hours=1)]  # type: ignore[operator]
        assert len(kept) <= len(days) + len(last_hour)
