"""Cost of one DuckDB snapshot (flows.snapshot.write_snapshot) at scale, and of an analyst's first queries.

    .venv/bin/python -m bench.snapshot_write [--members 1000000] [--events 2000000] [--history-runs 3]

Inputs are synthetic, shaped like the reconcile flow's: the published member frame in memory, the parsed
event log as parquet files (one per run), one history parquet per run. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from memberpulse.flows.snapshot import open_latest, write_snapshot
from memberpulse.transforms import EVENT_SCHEMA

T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)
STATUSES = {0: "active", 1: "at_risk", 2: "inactive"}


def members(n: int, run_at: datetime) -> pl.DataFrame:
    k = pl.int_range(0, n, dtype=pl.Int64)
    key = k.cast(pl.Utf8).str.zfill(8)
    return pl.select(
        membership_id="mem_" + key,
        company_id=pl.lit("biz_bench"),
        user_id="user_" + key,
        member_name="Member " + key,
        email="m" + key + "@example.com",
        status=k.mod(3).replace_strict(STATUSES, return_dtype=pl.Utf8),
        engagement_score=100 - k.mod(101),
        activity_score=100 - k.mod(101),
        last_active=pl.lit(run_at) - pl.duration(hours=k.mod(24 * 40)),
        joined_at=pl.lit(T0) - pl.duration(hours=k.mod(24 * 400)),
        total_sessions=k.mod(50),
        membership_status=pl.lit("active"),
        valid=k.mod(10) != 9,
        updated_at=pl.lit(run_at) - pl.duration(minutes=k.mod(600)),
    )


def events(n: int, offset: int, members_n: int) -> pl.DataFrame:
    k = pl.int_range(offset, offset + n, dtype=pl.Int64)
    given = pl.select(
        webhook_id="msg_" + k.cast(pl.Utf8),
        received_at=pl.lit(T0) - pl.duration(seconds=k),
        scheme=pl.lit("standard"),
        event_type=pl.lit("membership.went_valid"),
        kind=pl.lit("joined"),
        event_at=pl.lit(T0) - pl.duration(seconds=k + 1),
        membership_id="mem_" + k.mod(members_n).cast(pl.Utf8).str.zfill(8),
    )
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in EVENT_SCHEMA.items() if c not in given.columns]
    return given.with_columns(missing).select(EVENT_SCHEMA.names()).cast(EVENT_SCHEMA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--event-files", type=int, default=4)
    parser.add_argument("--history-runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="memberpulse-bench-") as tmp:
        root = Path(tmp)
        current = members(args.members, T0)
        event_paths = []
        per_file = args.events // args.event_files
        for i in range(args.event_files):
            path = root / "events" / f"{i:04d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            events(per_file, i * per_file, args.members).write_parquet(path)
            event_paths.append(path)
        history_paths = []
        for i in range(args.history_runs):
            run_at = T0 - timedelta(minutes=5 * (args.history_runs - 1 - i))
            path = root / "history" / f"{run_at:%Y%m%dT%H%M%S%fZ}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            (current if i == args.history_runs - 1 else members(args.members, run_at)).write_parquet(path)
            history_paths.append(path)
        drift = current.head(1000).select("membership_id", reason=pl.lit("webhook_missing"))
        runs = pl.DataFrame({"run_id": ["bench"], "started_at": [T0], "status": ["completed"]})

        timings: list[tuple[str, float]] = []
        for attempt in range(2):  # the second write also swaps latest and applies retention to the first
            started = time.perf_counter()
            written = write_snapshot(
                root / "snapshots",
                run_id=f"bench-{attempt}",
                run_at=T0 + timedelta(seconds=attempt),
                member_activity=current,
                events_parquet=event_paths,
                history_parquet=history_paths,
                drift=drift,
                pipeline_runs=runs,
                keep=1,
            )
            timings.append((f"write_snapshot #{attempt + 1}", time.perf_counter() - started))
        size_mb = written.stat().st_size / 1e6

        queries = {
            "members_at_risk_now (count)": "SELECT count(*) FROM members_at_risk_now",
            "status_counts_per_day": "SELECT * FROM status_counts_per_day",
            "new_members_per_week": "SELECT * FROM new_members_per_week",
            "seed check query": "SELECT member_name, status, activity_score, last_active, updated_at "
            "FROM member_activity ORDER BY updated_at DESC LIMIT 10",
        }
        started = time.perf_counter()
        con = open_latest(root / "snapshots")
        timings.append(("open_latest", time.perf_counter() - started))
        for label, sql in queries.items():
            started = time.perf_counter()
            con.execute(sql).fetchall()
            timings.append((label, time.perf_counter() - started))
        con.close()

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    history_rows = args.members * args.history_runs
    print(
        f"members {args.members:,}, events {args.events:,} in {args.event_files} parquet files, "
        f"history {args.history_runs} runs ({history_rows:,} rows); snapshot file {size_mb:,.0f} MB; "
        f"peak RSS {peak_mb:,.0f} MiB\n"
    )
    print("| step | seconds |\n|---|---|")
    for label, seconds in timings:
        print(f"| {label} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
