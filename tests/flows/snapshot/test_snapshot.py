"""The DuckDB snapshot writer, on real DuckDB files, with real reader and writer processes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from memberpulse.contracts.tables import RECONCILIATION_DRIFT
from memberpulse.errors import InvalidInput
from memberpulse.flows.snapshot import (
    LATEST_NAME,
    SNAPSHOT_TABLES,
    SNAPSHOT_VIEWS,
    latest_path,
    open_latest,
    thin_history,
    write_snapshot,
)
from memberpulse.transforms import EVENT_SCHEMA

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)  # a Monday
STATUSES = ("active", "at_risk", "inactive")
TS = pl.Datetime("us", "UTC")
MEMBER_SCHEMA = pl.Schema(
    {
        "membership_id": pl.String(),
        "company_id": pl.String(),
        "user_id": pl.String(),
        "member_name": pl.String(),
        "email": pl.String(),
        "status": pl.String(),
        "engagement_score": pl.Int64(),
        "activity_score": pl.Int64(),
        "last_active": TS,
        "joined_at": TS,
        "total_sessions": pl.Int64(),
        "membership_status": pl.String(),
        "valid": pl.Boolean(),
        "updated_at": TS,
    }
)
# --- deterministic run data, shared with the subprocesses below ---------------------------------------------


def run_id_for(run_no: int) -> str:
    return f"{run_no:04d}beef-0000-4000-8000-00000000{run_no:04d}"


def run_no_of(run_id: str) -> int:
    return int(run_id[:4])


def members_in_run(run_no: int, base: int) -> int:
    return base + 7 * run_no


def run_at_for(run_no: int) -> datetime:
    return T0 + timedelta(hours=9 * run_no, seconds=run_no)


def member_frame(n: int, run_at: datetime) -> pl.DataFrame:
    k = pl.int_range(0, n, dtype=pl.Int64)
    key = k.cast(pl.Utf8).str.zfill(7)
    return (
        pl.select(k.alias("k"), key.alias("key"))
        .select(
            membership_id="mem_" + pl.col("key"),
            company_id=pl.lit("biz_demo"),
            user_id="user_" + pl.col("key"),
            member_name="Member " + pl.col("k").cast(pl.Utf8),
            email="m" + pl.col("k").cast(pl.Utf8) + "@example.com",
            status=pl.col("k").mod(3).replace_strict(dict(enumerate(STATUSES)), return_dtype=pl.Utf8),
            engagement_score=100 - pl.col("k").mod(101),
            activity_score=100 - pl.col("k").mod(101),
            last_active=pl.lit(run_at) - pl.duration(days=pl.col("k").mod(40), hours=pl.col("k").mod(5)),
            joined_at=pl.lit(T0) - pl.duration(days=pl.col("k").mod(50)),
            total_sessions=pl.col("k").mod(13),
            membership_status=pl.lit("active"),
            valid=pl.col("k").mod(10) != 9,
            updated_at=pl.lit(run_at) - pl.duration(minutes=pl.col("k").mod(30)),
        )
        .cast(MEMBER_SCHEMA)
    )


def event_frame(n: int, run_at: datetime, prefix: str) -> pl.DataFrame:
    """Parsed events in the transforms' own schema (what the reconcile flow's event log holds)."""
    k = pl.int_range(0, n, dtype=pl.Int64)
    given = pl.select(
        webhook_id=pl.lit(f"{prefix}_wh_") + k.cast(pl.Utf8),
        received_at=pl.lit(run_at) - pl.duration(seconds=k),
        event_type=pl.lit("membership.went_valid"),
        kind=pl.lit("joined"),
        event_at=pl.lit(run_at) - pl.duration(seconds=k + 1),
        membership_id="mem_" + k.mod(max(n // 2, 1)).cast(pl.Utf8).str.zfill(7),
    )
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in EVENT_SCHEMA.items() if c not in given.columns]
    return given.with_columns(missing).select(EVENT_SCHEMA.names()).cast(EVENT_SCHEMA)


def history_file(work: Path, run_at: datetime, members: pl.DataFrame) -> Path:
    """As the reconcile store keeps them: one parquet per run, named by the run's time, no run_at column."""
    path = work / "history" / f"{run_at:%Y%m%dT%H%M%S%fZ}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    members.write_parquet(path)
    return path


def drift_frame(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {"membership_id": [f"mem_{k:07d}" for k in range(n)], "reason": ["api_only"] * n},
        schema={"membership_id": pl.Utf8, "reason": pl.Utf8},
    )


def runs_frame(upto: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "run_id": [run_id_for(k) for k in range(upto + 1)],
            "started_at": [run_at_for(k) for k in range(upto + 1)],
            "status": ["completed"] * (upto + 1),
            "events_ingested": [2 * k for k in range(upto + 1)],
        },
        schema={"run_id": pl.Utf8, "started_at": TS, "status": pl.Utf8, "events_ingested": pl.Int64},
    )


def write_run(snapshots: Path, work: Path, run_no: int, *, base: int, keep: int = 5) -> Path:
    """Run ``run_no`` of a growing population: its events as parquet, history of every run so far."""
    run_at = run_at_for(run_no)
    n = members_in_run(run_no, base)
    members = member_frame(n, run_at)
    events_path = work / "events" / f"{run_no:04d}.parquet"
    events_path.parent.mkdir(parents=True, exist_ok=True)
    event_frame(2 * n, run_at, f"r{run_no}").write_parquet(events_path)
    history_file(work, run_at, members)
    return write_snapshot(
        snapshots,
        run_id=run_id_for(run_no),
        run_at=run_at,
        member_activity=members,
        events_parquet=[events_path],
        history_parquet=sorted((work / "history").glob("*.parquet")),
        drift=drift_frame(run_no),
        pipeline_runs=runs_frame(run_no),
        keep=keep,
    )


def check_complete(con: duckdb.DuckDBPyConnection, base: int) -> int:
    """Every table agrees with the run named in snapshot_info; returns that run's number."""
    (run_id,) = con.execute("SELECT run_id FROM snapshot_info").fetchone() or ("",)
    run_no = run_no_of(run_id)
    counts = con.execute(
        "SELECT (SELECT count(*) FROM member_activity), (SELECT count(*) FROM events), "
        "(SELECT count(*) FROM member_activity_history), (SELECT count(*) FROM pipeline_runs), "
        "(SELECT count(*) FROM reconciliation_drift), (SELECT sum(members) FROM status_counts_per_day)"
    ).fetchone()
    n = members_in_run(run_no, base)
    history = sum(members_in_run(k, base) for k in range(run_no + 1))
    expected = (n, 2 * n, history, run_no + 1, run_no)
    assert counts is not None and counts[:5] == expected, (run_id, counts, expected)
    return run_no


# --- the content an analyst sees ----------------------------------------------------------------------


def test_tables_views_types_and_content(tmp_path: Path) -> None:
    snapshots, work = tmp_path / "snapshots", tmp_path / "work"
    run_ats = [T0, T0 + timedelta(hours=5), T0 + timedelta(days=1, hours=2), T0 + timedelta(days=8)]
    history = [member_frame(30 + 3 * k, at) for k, at in enumerate(run_ats)]
    history_paths = [history_file(work, at, frame) for at, frame in zip(run_ats, history, strict=True)]
    run_at = run_ats[-1]
    members = history[-1].drop("activity_score")  # the writer derives it from engagement_score
    events_a, events_b = event_frame(40, run_at, "a"), event_frame(25, run_at, "b").drop("user_id")
    # Whop redelivered five of the first file's webhooks later; a later run's log file holds them again.
    redelivered = events_a.head(5).with_columns(received_at=pl.col("received_at") + timedelta(hours=1))
    paths = [work / "events-a.parquet", work / "events-b.parquet", work / "events-c.parquet"]
    for frame, path in zip((events_a, events_b, redelivered), paths, strict=True):
        frame.write_parquet(path)

    written = write_snapshot(
        snapshots,
        run_id="3f2a9c1e-aaaa-bbbb-cccc-000000000001",
        run_at=run_at,
        member_activity=members,
        events_parquet=paths,
        history_parquet=history_paths,
        drift=drift_frame(4),
        pipeline_runs=runs_frame(2),
        keep=3,
    )

    assert written.name == f"{run_at:%Y%m%dT%H%M%S%fZ}-3f2a9c1e.duckdb"
    latest = latest_path(snapshots)
    assert latest.stat().st_ino == written.stat().st_ino
    assert not written.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert sorted(p.name for p in snapshots.iterdir()) == sorted([written.name, LATEST_NAME, ".write.lock"])

    con = open_latest(snapshots)
    try:
        objects = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall())
        assert objects == {
            **{t: "BASE TABLE" for t in SNAPSHOT_TABLES},
            **{v: "VIEW" for v in SNAPSHOT_VIEWS},
        }
        types = dict((r[0], r[1]) for r in con.execute("DESCRIBE member_activity").fetchall())
        text, ts = "VARCHAR", "TIMESTAMP WITH TIME ZONE"
        assert types == {
            "membership_id": text, "company_id": text, "user_id": text, "member_name": text, "email": text,
            "status": text, "engagement_score": "INTEGER", "activity_score": "INTEGER", "last_active": ts,
            "joined_at": ts, "total_sessions": "INTEGER", "membership_status": text, "valid": "BOOLEAN",
            "updated_at": ts,
        }  # fmt: skip
        got = con.sql("SELECT * FROM member_activity ORDER BY membership_id").pl()
        want = members.with_columns(activity_score=pl.col("engagement_score")).select(got.columns)
        assert got.cast(want.schema).equals(want.sort("membership_id"))

        # The check query of the TypeScript webhook guide this project started from, verbatim.
        top = con.execute(
            "SELECT member_name, status, activity_score, last_active, updated_at "
            "FROM member_activity ORDER BY updated_at DESC LIMIT 10;"
        ).fetchall()
        assert [r[4] for r in top] == sorted(members["updated_at"].to_list(), reverse=True)[:10]

        # Events: every file, union by column name (the second has no user_id), each webhook once.
        assert con.execute("SELECT count(*), count(DISTINCT webhook_id) FROM events").fetchone() == (65, 65)
        kept = con.execute("SELECT webhook_id, received_at FROM events WHERE webhook_id LIKE 'a_%'").fetchall()
        assert sorted(kept) == sorted(events_a.select("webhook_id", "received_at").rows())
        assert dict((r[0], r[1]) for r in con.execute("DESCRIBE events").fetchall())["event_at"] == (
            "TIMESTAMP WITH TIME ZONE"
        )

        # History: one row per member per run, dated by the file's run time.
        per_run = dict(con.execute("SELECT run_at, count(*) FROM member_activity_history GROUP BY 1").fetchall())
        assert per_run == {at: len(f) for at, f in zip(run_ats, history, strict=True)}

        at_risk = con.execute("SELECT membership_id, days_since_active FROM members_at_risk_now").fetchall()
        expected_risk = members.filter(pl.col("status") == "at_risk").sort(["last_active", "membership_id"])
        assert [r[0] for r in at_risk] == expected_risk["membership_id"].to_list()
        assert [r[1] for r in at_risk] == [
            round((run_at - t).total_seconds() / 86400, 1) for t in expected_risk["last_active"]
        ]

        # Status counts per UTC day come from that day's last run.
        last_of_day: dict[date, tuple[datetime, pl.DataFrame]] = {}
        for at, frame in zip(run_ats, history, strict=True):
            last_of_day[at.date()] = max(last_of_day.get(at.date(), (at, frame)), (at, frame), key=lambda x: x[0])
        want_days = []
        for day, (at, frame) in sorted(last_of_day.items()):
            c = Counter(frame["status"].to_list())
            want_days.append(("biz_demo", day, at, c["active"], c["at_risk"], c["inactive"], len(frame)))
        assert con.execute("SELECT * FROM status_counts_per_day").fetchall() == want_days
        assert len(want_days) == 3  # two runs on the first day collapse into one row

        weeks = Counter(
            (t - timedelta(days=t.weekday())).date() for t in members["joined_at"].to_list() if t is not None
        )
        valid_weeks = Counter(
            (t - timedelta(days=t.weekday())).date()
            for t, v in zip(members["joined_at"], members["valid"], strict=True)
            if v
        )
        assert con.execute("SELECT * FROM new_members_per_week").fetchall() == [
            ("biz_demo", w, weeks[w], valid_weeks[w]) for w in sorted(weeks)
        ]
        assert con.execute("SELECT run_id, run_at FROM snapshot_info").fetchone() == (
            "3f2a9c1e-aaaa-bbbb-cccc-000000000001",
            run_at,
        )
        assert con.execute("SELECT count(*) FROM reconciliation_drift").fetchone() == (4,)
        assert con.execute("SELECT count(*) FROM pipeline_runs").fetchone() == (3,)
        # Written in the pre-2.0 file format (no storage_version tag), so DuckDB 1.1+ clients open it too.
        options = con.execute("SELECT options FROM duckdb_databases() WHERE database_name = 'snapshot'").fetchone()
        assert options == ({},)
    finally:
        con.close()


def test_events_from_a_frame_and_history_with_a_run_at_column(tmp_path: Path) -> None:
    run_at = T0 + timedelta(days=2)
    members = member_frame(9, run_at)
    hist = members.with_columns(run_at=pl.lit(run_at, dtype=TS), run_id=pl.lit("x"))
    hist_path = tmp_path / "anything.parquet"
    hist.write_parquet(hist_path)
    write_snapshot(
        tmp_path / "s",
        run_id="abc",
        run_at=run_at,
        member_activity=members,
        events=event_frame(7, run_at, "f"),
        history_parquet=[hist_path],
        drift=drift_frame(0),
        pipeline_runs=runs_frame(0),
        keep=1,
    )
    with open_latest(tmp_path / "s") as con:
        assert con.execute("SELECT count(*) FROM events").fetchone() == (7,)
        assert con.execute("SELECT DISTINCT run_at, run_id FROM member_activity_history").fetchall() == [(run_at, "x")]


def test_empty_inputs_give_typed_empty_tables(tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    write_snapshot(
        snapshots,
        run_id="00000000-empty",
        run_at=T0,
        member_activity=pl.DataFrame(schema=MEMBER_SCHEMA),
        drift=drift_frame(0),
        pipeline_runs=runs_frame(0).clear(),
        keep=2,
    )
    with open_latest(snapshots) as con:
        for table in SNAPSHOT_TABLES:
            expected = 1 if table == "snapshot_info" else 0
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone() == (expected,), table
        for view in SNAPSHOT_VIEWS:
            assert con.execute(f"SELECT * FROM {view}").fetchall() == [], view
        describe = {t: dict((r[0], r[1]) for r in con.execute(f"DESCRIBE {t}").fetchall()) for t in SNAPSHOT_TABLES}
    assert describe["member_activity"]["last_active"] == "TIMESTAMP WITH TIME ZONE"
    assert describe["member_activity_history"]["run_at"] == "TIMESTAMP WITH TIME ZONE"
    assert describe["member_activity_history"]["engagement_score"] == "INTEGER"
    assert describe["events"]["event_at"] == "TIMESTAMP WITH TIME ZONE"
    assert describe["events"]["webhook_id"] == "VARCHAR"
    assert describe["pipeline_runs"] == {
        "run_id": "VARCHAR", "started_at": "TIMESTAMP WITH TIME ZONE", "status": "VARCHAR",
        "events_ingested": "BIGINT",
    }  # fmt: skip
    # Drift carries its declared columns whatever the frame had (the views and the report count it per company).
    assert list(describe["reconciliation_drift"]) == list(RECONCILIATION_DRIFT.names)

    # An empty event frame keeps its own schema.
    write_snapshot(
        snapshots,
        run_id="00000001-empty",
        run_at=T0 + timedelta(minutes=5),
        member_activity=pl.DataFrame(schema=MEMBER_SCHEMA),
        events=pl.DataFrame(schema={**EVENT_SCHEMA, "body": pl.Utf8}),
        history_parquet=[],
        drift=drift_frame(0),
        pipeline_runs=runs_frame(0),
        keep=2,
    )
    with open_latest(snapshots) as con:
        assert "body" in {r[0] for r in con.execute("DESCRIBE events").fetchall()}


def test_bad_inputs_are_refused_and_leave_nothing_behind(tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    good: dict[str, Any] = {
        "run_id": "r1",
        "run_at": T0,
        "member_activity": member_frame(3, T0),
        "drift": drift_frame(0),
        "pipeline_runs": runs_frame(0),
        "keep": 2,
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({"member_activity": member_frame(3, T0).drop("status", "valid")}, "status, valid"),
        ({"run_at": T0.replace(tzinfo=None)}, "timezone-aware"),
        ({"keep": 0}, "keep"),
        ({"events": event_frame(1, T0, "x"), "events_parquet": []}, "not both"),
        ({"drift": pl.DataFrame()}, "reconciliation_drift has no columns"),
        ({"run_id": "--"}, "run_id"),
        ({"member_activity": member_frame(3, T0).with_columns(membership_id=pl.lit(None, pl.Utf8))}, "NOT NULL"),
        ({"member_activity": member_frame(3, T0).with_columns(last_active=pl.lit("soon"))}, "member_activity"),
    ]
    for change, message in cases:
        with pytest.raises(InvalidInput, match=message):
            write_snapshot(snapshots, **{**good, **change})
    assert [p.name for p in snapshots.iterdir()] == [".write.lock"]  # no snapshot, no latest, no tmp file
    with pytest.raises(InvalidInput, match="memberpulse run"):
        open_latest(snapshots)


def test_retention_keeps_the_newest_and_never_what_latest_is(tmp_path: Path) -> None:
    snapshots, work = tmp_path / "snapshots", tmp_path / "work"
    written = [write_run(snapshots, work, k, base=5, keep=3) for k in range(5)]

    def timestamped() -> list[str]:
        return sorted(p.name for p in snapshots.glob("*.duckdb") if p.name != LATEST_NAME)

    assert timestamped() == [p.name for p in written[-3:]]
    assert latest_path(snapshots).stat().st_ino == written[-1].stat().st_ino

    # A backdated run (``memberpulse run --as-of`` in the past) sorts first, but latest points at it: kept.
    backdated = write_snapshot(
        snapshots,
        run_id="backdated",
        run_at=T0 - timedelta(days=30),
        member_activity=member_frame(2, T0),
        drift=drift_frame(0),
        pipeline_runs=runs_frame(0),
        keep=3,
    )
    assert timestamped() == sorted([backdated.name, *(p.name for p in written[-3:])])
    assert latest_path(snapshots).stat().st_ino == backdated.stat().st_ino
    with open_latest(snapshots) as con:
        assert con.execute("SELECT run_id FROM snapshot_info").fetchone() == ("backdated",)

    write_run(snapshots, work, 5, base=5, keep=1)
    assert timestamped() == [f"{run_at_for(5):%Y%m%dT%H%M%S%fZ}-0005beef.duckdb"]


def test_thinned_history_gives_the_same_status_counts_per_day(tmp_path: Path) -> None:
    work = tmp_path / "work"
    run_ats = [T0 + timedelta(hours=2 * k, minutes=k % 7) for k in range(40)]  # ~3.3 days, uneven minutes
    paths = [
        history_file(
            work, at, member_frame(6 + k % 5, at).with_columns(pl.col("status").shift(k % 3).fill_null("active"))
        )
        for k, at in enumerate(run_ats)
    ]
    thinned = thin_history(list(reversed(paths)), recent=timedelta(hours=5))

    newest = run_ats[-1]
    recent = [p for at, p in zip(run_ats, paths, strict=True) if at >= newest - timedelta(hours=5)]
    older_days = sorted({at.date() for at in run_ats if at.date() != newest.date()})
    last_per_day = [max((at, p) for at, p in zip(run_ats, paths, strict=True) if at.date() == d)[1] for d in older_days]
    assert thinned == [*last_per_day, *recent]

    answers = []
    for name, history in (("full", paths), ("thin", thinned)):
        write_snapshot(
            tmp_path / name,
            run_id=name,
            run_at=newest,
            member_activity=member_frame(3, newest),
            history_parquet=history,
            drift=drift_frame(0),
            pipeline_runs=runs_frame(0),
            keep=1,
        )
        with open_latest(tmp_path / name) as con:
            answers.append(con.execute("SELECT * FROM status_counts_per_day").fetchall())
    assert answers[0] == answers[1] and len(answers[0]) == len({at.date() for at in run_ats})


# --- concurrency and crashes, with real processes ----------------------------------------------------

READER = """
import json, sys, time
from pathlib import Path
import duckdb
from tests.flows.snapshot.test_snapshot import check_complete  # importable: the reader runs from the checkout
from memberpulse.flows.snapshot import open_latest

mode, snapshots, base, stop = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
seen, checks, errors = set(), 0, []
held = duckdb.connect(str(snapshots / "latest.duckdb"), read_only=True) if mode == "hold" else None
print("ready", flush=True)
while not stop.exists():
    try:
        if held is not None:
            seen.add(check_complete(held, base))
        else:
            with open_latest(snapshots) as con:
                seen.add(check_complete(con, base))
        checks += 1
    except Exception as exc:
        errors.append(repr(exc))
    time.sleep(0.01)
print(json.dumps({"seen": sorted(seen), "checks": checks, "errors": errors[:5]}), flush=True)
"""


def _start_reader(mode: str, snapshots: Path, base: int, stop: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", READER, mode, str(snapshots), str(base), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.slow
def test_readers_in_other_processes_never_block_the_writer_nor_see_a_partial_file(tmp_path: Path) -> None:
    snapshots, work, stop, base = tmp_path / "snapshots", tmp_path / "work", tmp_path / "stop", 3000
    write_run(snapshots, work, 0, base=base)
    holder = _start_reader("hold", snapshots, base, stop)  # an analyst with latest.duckdb open all along
    opener = _start_reader("open", snapshots, base, stop)  # an analyst re-opening latest.duckdb over and over
    try:
        for run_no in range(1, 7):
            started = time.monotonic()
            write_run(snapshots, work, run_no, base=base, keep=3)
            assert time.monotonic() - started < 30  # a held reader lock would make this raise or hang
            with open_latest(snapshots) as con:
                assert check_complete(con, base) == run_no
    finally:
        stop.touch()
        outputs = [json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1]) for p in (holder, opener)]
    held, opened = outputs
    assert held["errors"] == [] and held["checks"] > 0 and held["seen"] == [0]
    assert opened["errors"] == [] and opened["checks"] > 0 and len(opened["seen"]) >= 2


WRITER = """
import sys
from pathlib import Path
from tests.flows.snapshot.test_snapshot import write_run  # importable: the writer runs from the checkout
write_run(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), base=int(sys.argv[4]))
"""


@pytest.mark.parametrize("delay", [0.0, 0.15])
@pytest.mark.slow
def test_sigkill_mid_write_leaves_latest_intact_and_the_next_write_clean(tmp_path: Path, delay: float) -> None:
    snapshots, work, base = tmp_path / "snapshots", tmp_path / "work", 150_000
    write_run(snapshots, work, 0, base=10)
    with open_latest(snapshots) as con:
        before = con.execute("SELECT run_id FROM snapshot_info").fetchone()

    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(snapshots), str(work), "1", str(base)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(".tmp-") for p in snapshots.iterdir()):
            assert proc.poll() is None, "the writer finished before it could be killed mid-write"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    leftovers = [p.name for p in snapshots.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers, "the kill was meant to land mid-write"
    assert not (snapshots / f"{run_at_for(1):%Y%m%dT%H%M%S%fZ}-0001beef.duckdb").exists()
    with open_latest(snapshots) as con:
        assert con.execute("SELECT run_id FROM snapshot_info").fetchone() == before
        assert con.execute("SELECT count(*) FROM member_activity").fetchone() == (members_in_run(0, 10),)

    write_run(snapshots, work, 2, base=10)
    assert not [p.name for p in snapshots.iterdir() if p.name.startswith(".tmp-")]
    with open_latest(snapshots) as con:
        assert con.execute("SELECT run_id FROM snapshot_info").fetchone() == (run_id_for(2),)
        assert con.execute("SELECT count(*) FROM member_activity").fetchone() == (members_in_run(2, 10),)
