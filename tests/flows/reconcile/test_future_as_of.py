"""Times in the future never wedge the pipeline: a future ``--as-of`` is refused before anything is written,
and a warehouse committed as of a future time (a clock that was ahead, an older version) is named with its
remedy, which works."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from memberpulse.cli import main
from memberpulse.contracts.times import file_time
from memberpulse.flows.reconcile._store import ReconcileStore
from memberpulse.landing import mock_events as mock
from tests.flows.reconcile.test_run_semantics import _tree_digest
from tests.support.reconcile_testkit import AS_OF, append_raw, member, raw_record, scenario


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("MEMBERPULSE_DATA_DIR", str(data))
    monkeypatch.chdir(tmp_path)  # no stray .env
    append_raw(data, scenario())
    return data


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_a_future_as_of_is_refused_and_writes_nothing(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _tree_digest(data_dir)
    assert main(["run", "--as-of", "2099-01-01T00:00:00Z"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--as-of 2099-01-01T00:00:00+00:00 is in the future" in line and "hint:" in line
    assert _tree_digest(data_dir) == before
    # Within the clock-skew allowance it is "now" on a clock slightly behind: accepted.
    soon = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()
    assert main(["run", "--as-of", soon]) == 0


def _commit_in_the_future(data_dir: Path, when: datetime) -> None:
    """The state an older version left after ``run --as-of <when>``: the manifest and a history file dated then."""
    assert main(["run"]) == 0
    store = ReconcileStore(data_dir / "warehouse")
    manifest = json.loads(store.manifest_path.read_text())
    manifest["as_of"] = when.isoformat()
    store.manifest_path.write_text(json.dumps(manifest))
    newest = store.history_paths()[-1]
    shutil.copy(newest, newest.with_name(f"{file_time(when)}.parquet"))


def test_a_warehouse_committed_in_the_future_is_named_and_a_full_refresh_repairs_it(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    future = datetime(2099, 1, 1, tzinfo=UTC)
    _commit_in_the_future(data_dir, future)
    capsys.readouterr()

    assert main(["run"]) == 2  # never "backdated: nothing committed" with exit 0
    line = _one_line(capsys.readouterr().err)
    assert "as of 2099-01-01T00:00:00+00:00, later than this machine's clock" in line
    assert "manifest.json" in line and "memberpulse run --full-refresh" in line

    assert main(["run", "--full-refresh"]) == 0
    out = capsys.readouterr().out
    assert "backdated" not in out
    store = ReconcileStore(data_dir / "warehouse")
    last = store.last_as_of()
    assert last is not None and last <= datetime.now(UTC)
    assert all(p.stem < file_time(datetime.now(UTC)) for p in store.history_paths())  # 2099's history is gone
    with duckdb.connect(str(data_dir / "snapshots" / "latest.duckdb"), read_only=True) as con:
        statuses = dict(con.sql("SELECT status, count(*) FROM member_activity GROUP BY ALL").fetchall())
        days = [d for (d,) in con.sql("SELECT day FROM status_counts_per_day").fetchall()]
    assert set(statuses) != {"inactive"}, statuses  # scored as of now, not as of 2099
    assert all(d.year < 2099 for d in days)

    append_raw(data_dir, scenario()[:1], writer="later-writer")
    assert main(["run"]) == 0  # ordinary runs commit again
    assert "backdated" not in capsys.readouterr().out
    after = store.last_as_of()
    assert after is not None and after > last


def test_a_last_commit_slightly_ahead_is_caught_up_to_not_gone_behind(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another host's clock a little ahead: the next ordinary run commits as of that time, never backdated."""
    ahead = datetime.now(UTC) + timedelta(minutes=3)
    _commit_in_the_future(data_dir, ahead)
    capsys.readouterr()
    assert main(["run"]) == 0
    assert "backdated" not in capsys.readouterr().out
    assert ReconcileStore(data_dir / "warehouse").last_as_of() == ahead


def test_a_commit_made_under_a_clock_hours_ahead_never_stops_ordinary_runs(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker whose clock read 2 hours ahead committed; once clocks agree, every ordinary run still ingests,
    commits and publishes what is new (as of that commit), says the clock is behind, and piles up no files."""
    ahead = datetime.now(UTC) + timedelta(hours=2)
    _commit_in_the_future(data_dir, ahead)
    capsys.readouterr()
    for n in (1, 2):
        append_raw(data_dir, [raw_record(mock.went_valid(member(100 + n), created_at=AS_OF))], writer=f"late-{n}")
        assert main(["run", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["mode"] == "run" and report["events_ingested"] == 1
        assert report["as_of"] == ahead.isoformat()
        [warning] = report["warnings"]
        assert "behind the last commit" in warning and "clock" in warning
    with duckdb.connect(str(data_dir / "snapshots" / "latest.duckdb"), read_only=True) as con:
        ids = {i for (i,) in con.sql("SELECT membership_id FROM member_activity").fetchall()}
    assert {"mem_0101", "mem_0102"} <= ids
    assert not (data_dir / "snapshots" / "as-of").exists()  # no backdated snapshot per run
