"""Publish benchmark: the COPY path vs per-row upserts, and a no-change run over 1M rows.

    .venv/bin/python -m bench.publish_bench [--rows N] [--per-row-sample N] [--no-change-rows N]

Starts its own throwaway PostgreSQL server (the test harness, but durable: fsync, full_page_writes and
synchronous_commit ON, with a production-sized WAL) on 127.0.0.1, applies supabase/migrations, and measures:

1. COPY path, 100k new rows (insert) and 100k changed rows (update): ``PostgresPublisher.publish_members``
   end to end (diff against the warehouse state + COPY + one upsert + commit + state file).
2. Per-row baseline: one ``INSERT … ON CONFLICT … DO UPDATE`` per member, one round trip and one commit
   each (autocommit), as the per-webhook handler of the TypeScript webhook guide this project started from does —
   on a sample, rate extrapolated; and the same
   statements inside one transaction (round trips without per-row commits), for a fairer comparison.
3. No-change run over 1M rows: the same scored frame published twice; the second run diffs, finds nothing
   and sends nothing. Plus the worst case: the warehouse state lost, so all 1M rows are sent and the
   upsert's WHERE leaves every one untouched.

Besides wall time it reports CPU seconds (this process + every server process), because the machine is
shared: wall time depends on the neighbours, CPU time much less. ``rows/CPU-s`` is what one core does.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import psycopg

ROOT = Path(__file__).resolve().parents[1]

from memberpulse.flows.publish import PostgresPublisher, PublishedState
from memberpulse.flows.publish._migrations import apply_migrations
from memberpulse.flows.publish._schema import MEMBER_ACTIVITY_COLUMNS
from tests.support.postgres import PostgresServer, start_server

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
# Durable like a real server, with the WAL room a production server has (no checkpoint storm mid-run).
DURABLE = {
    "fsync": "on", "full_page_writes": "on", "synchronous_commit": "on",
    "shared_buffers": "256MB", "max_wal_size": "4GB",
}  # fmt: skip
PER_ROW_UPSERT = (
    f"INSERT INTO member_activity ({', '.join(MEMBER_ACTIVITY_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(MEMBER_ACTIVITY_COLUMNS))}) "
    "ON CONFLICT (membership_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in MEMBER_ACTIVITY_COLUMNS if c != "membership_id")
)
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Measure:
    case: str
    rows: int
    wall: float
    cpu: float  # this process + the server's processes


def scored(n: int, *, score_shift: int = 0) -> pl.DataFrame:
    """``n`` scored rows built in polars (fast for 1M)."""
    frame = pl.DataFrame({"i": pl.int_range(0, n, eager=True)})
    return frame.select(
        pl.format("mem_{}", pl.col("i").cast(pl.Utf8).str.zfill(8)).alias("membership_id"),
        pl.lit("biz_bench").alias("company_id"),
        pl.format("user_{}", pl.col("i")).alias("user_id"),
        pl.format("Member {}", pl.col("i")).alias("member_name"),
        pl.format("m{}@example.com", pl.col("i")).alias("email"),
        pl.when(pl.col("i") % 3 == 0).then(pl.lit("at_risk")).otherwise(pl.lit("active")).alias("status"),
        ((pl.col("i") + score_shift) % 101).cast(pl.Int32).alias("engagement_score"),
        (pl.lit(T0) - pl.duration(hours=pl.col("i") % 500)).alias("last_active"),
        (pl.lit(T0) - pl.duration(days=30 + pl.col("i") % 365)).alias("joined_at"),
        (pl.col("i") % 40).cast(pl.Int32).alias("total_sessions"),
        pl.lit("active").alias("membership_status"),
        pl.lit(True).alias("valid"),
    )


def server_cpu_seconds(server: PostgresServer) -> float:
    """CPU used so far by the postmaster, its live children, and its exited children (cutime/cstime)."""
    postmaster = int((server.datadir / "postmaster.pid").read_text().split()[0])
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        if pid == postmaster:
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        elif ppid == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(server: PostgresServer, case: str, rows: int, fn: Callable[[], Any]) -> tuple[Measure, Any]:
    cpu0, wall0 = own_cpu_seconds() + server_cpu_seconds(server), time.perf_counter()
    result = fn()
    wall = time.perf_counter() - wall0
    cpu = own_cpu_seconds() + server_cpu_seconds(server) - cpu0
    return Measure(case, rows, wall, cpu), result


def per_row(dsn: str, rows: list[tuple[Any, ...]], *, autocommit: bool) -> None:
    with psycopg.connect(dsn, autocommit=autocommit) as conn, conn.cursor() as cur:
        for row in rows:
            cur.execute(PER_ROW_UPSERT, row)  # one statement, one round trip (and one commit) per member
        if not autocommit:
            conn.commit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--per-row-sample", type=int, default=10_000)
    parser.add_argument("--no-change-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    n, sample_n, big_n = args.rows, args.per_row_sample, args.no_change_rows

    load_before = os.getloadavg()
    server = start_server(settings=DURABLE)
    out: list[Measure] = []
    try:
        with tempfile.TemporaryDirectory(prefix="publish-bench-") as tmp:
            work = Path(tmp)
            # --- 1. COPY path ------------------------------------------------------------------------------
            dsn = server.dsn(server.create_database("bench_copy"))
            apply_migrations(dsn)
            publisher = PostgresPublisher(dsn, state=PublishedState(work / "copy"))
            first, changed = scored(n), scored(n, score_shift=1)
            m, result = measure(server, "COPY path: new rows (insert)", n,
                                lambda: publisher.publish_members(first, run_at=T0))  # fmt: skip
            assert result.inserted == n, result
            out.append(m)
            m, result = measure(server, "COPY path: changed rows (update)", n,
                                lambda: publisher.publish_members(changed, run_at=T0 + timedelta(hours=1)))  # fmt: skip
            assert result.updated == n, result
            out.append(m)

            # --- 2. per-row baseline on the same table, the same kind of change ---------------------------
            later = scored(n, score_shift=2).with_columns(updated_at=pl.lit(T0 + timedelta(hours=2)))
            rows = later.select(MEMBER_ACTIVITY_COLUMNS).rows()
            m, _ = measure(server, "per-row upserts, autocommit (guide's handler)", sample_n,
                           lambda: per_row(dsn, rows[:sample_n], autocommit=True))  # fmt: skip
            out.append(m)
            m, _ = measure(server, "per-row upserts, one transaction", sample_n,
                           lambda: per_row(dsn, rows[sample_n : 2 * sample_n], autocommit=False))  # fmt: skip
            out.append(m)

            # --- reference: the same change done inside the server alone (no client, no COPY, no parse) --------
            def update_in_place() -> None:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(
                        "UPDATE member_activity SET engagement_score = (engagement_score + 7) % 101,"
                        " updated_at = updated_at + interval '1 hour'"
                    )

            m, _ = measure(server, "reference: server-only UPDATE of every row (floor)", n, update_in_place)
            out.append(m)

            # --- 3. no-change run over 1M rows ---------------------------------------------------------
            dsn = server.dsn(server.create_database("bench_nochange"))
            apply_migrations(dsn)
            big = scored(big_n)
            publisher = PostgresPublisher(dsn, state=PublishedState(work / "nochange"))
            m, result = measure(server, "COPY path: initial load (insert)", big_n,
                                lambda: publisher.publish_members(big, run_at=T0))  # fmt: skip
            out.append(m)
            m, result = measure(server, "no-change run (nothing to send)", big_n,
                                lambda: publisher.publish_members(big, run_at=T0 + timedelta(hours=1)))  # fmt: skip
            assert (result.inserted, result.updated, result.unchanged) == (0, 0, big_n), result
            out.append(m)
            lost = PostgresPublisher(dsn, state=PublishedState(work / "lost-state"))
            m, result = measure(server, "no-change run, state lost (all sent, 0 written)", big_n,
                                lambda: lost.publish_members(big, run_at=T0 + timedelta(hours=2)))  # fmt: skip
            assert (result.inserted, result.updated) == (0, 0), result
            out.append(m)
    finally:
        server.stop()

    load_after = os.getloadavg()
    print(f"PostgreSQL {server.version // 10000}.{server.version % 10000} {DURABLE}")
    print(f"load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f} on {os.cpu_count()} cores\n")
    print("| case | rows | wall s | rows/s (wall) | CPU s | rows/CPU-s |")
    print("|---|---:|---:|---:|---:|---:|")
    for m in out:
        print(
            f"| {m.case} | {m.rows:,} | {m.wall:.3f} | {m.rows / m.wall:,.0f} | {m.cpu:.2f} | {m.rows / m.cpu:,.0f} |"
        )
    copy, auto, one_tx = out[1], out[2], out[3]
    for label, base in (("per-row autocommit", auto), ("per-row in one transaction", one_tx)):
        wall_x = (copy.rows / copy.wall) / (base.rows / base.wall)
        cpu_x = (copy.rows / copy.cpu) / (base.rows / base.cpu)
        print(f"\nCOPY path (changed rows) vs {label}: {wall_x:,.1f}x by wall time, {cpu_x:,.1f}x by CPU time", end="")
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
