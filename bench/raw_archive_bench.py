"""Full refresh from the compacted raw archive vs from NDJSON, at 1M members and 10M raw events.

    .venv/bin/python -m bench.raw_archive_bench                              # 1M members, 10M events, 10 days
    .venv/bin/python -m bench.raw_archive_bench --members 100000 --events 1000000   # a quick run
    .venv/bin/python -m bench.raw_archive_bench --postgres                   # publish to a real PostgreSQL too

Writes the events as landing segments (64 MiB each, spread over ``--days`` UTC days, last written 30 days
ago), then runs the real reconcile flow (Prefect test harness) twice with ``full_refresh=True``: first from the
NDJSON (its last step compacts every segment into the archive: timed as ``compact``), then from the archive.
Prints each run's steps, wall time and peak RSS, and the NDJSON and archive sizes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from rich.console import Console
from rich.table import Table

from bench.reconcile_bench import bench_settings, peak_rss
from bench.transforms_synth import BASE, SPAN_S, generate_raw, to_ndjson
from memberpulse.contracts.raw_record import raw_archive_dir, segment_path

SEGMENT_BYTES = 64 * 1024 * 1024


def write_history(landing: Path, *, members: int, events: int, days: int, chunk: int = 130_000) -> tuple[int, int]:
    """Raw records as landing segments (rotated at 64 MiB), day by day; returns (records, bytes)."""
    first_day = date(2026, 1, 1)
    per_day = -(-events // days)
    records = written = 0
    old = time.time() - 30 * 86_400
    for d in range(days):
        seq, size = 0, SEGMENT_BYTES
        for start in range(d * per_day, min(events, (d + 1) * per_day), chunk):
            count = min(chunk, (d + 1) * per_day - start, events - start)
            raw = generate_raw(members, events, start=start, count=count)
            data = to_ndjson(raw)
            if size + len(data) > SEGMENT_BYTES:  # rotate, as the landing does at its size limit
                seq, size = seq + 1, 0
            path = segment_path(landing, first_day + timedelta(days=d), "bench-writer", seq)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as out:
                out.write(data)
            size += len(data)
            records += raw.height
            written += len(data)
    for path in landing.rglob("*.ndjson"):
        os.utime(path, (old, old))
    return records, written


def _size(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--postgres", action="store_true", help="publish to a real PostgreSQL server")
    args = parser.parse_args()
    console = Console(width=200)

    from prefect.testing.utilities import prefect_test_harness

    from memberpulse.flows.reconcile import reconcile_flow
    from tests.support.postgres import start_server

    as_of = BASE + timedelta(seconds=SPAN_S + SPAN_S // 3 + 86_400)
    with tempfile.TemporaryDirectory(prefix="raw-archive-bench-", dir=os.environ.get("BENCH_TMP")) as tmp:
        data_dir = Path(tmp)
        t0 = time.perf_counter()
        records, nbytes = write_history(data_dir / "landing", members=args.members, events=args.events, days=args.days)
        console.print(
            f"generated {records:,} raw records, {nbytes / 2**30:.2f} GiB NDJSON in {time.perf_counter() - t0:.0f} s"
        )
        server = start_server() if args.postgres else None
        try:
            settings = bench_settings(data_dir, server)
            results = []
            with prefect_test_harness():
                for label in ("full refresh from NDJSON (then compaction)", "full refresh from the archive"):
                    load = os.getloadavg()[0]
                    with peak_rss() as peak:
                        t, cpu = time.perf_counter(), time.process_time()
                        result = reconcile_flow(as_of=as_of, full_refresh=True, settings=settings)
                        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
                    results.append((label, wall, peak[0], load, result))
                    console.print(f"{label}: {wall:.1f} s wall, {cpu:.1f} CPU s (load average before: {load:.1f})")
            archive = _size(raw_archive_dir(settings.landing_dir), "*.parquet")
            left = _size(settings.landing_dir, "*.ndjson")
        finally:
            if server is not None:
                server.stop()

    table = Table(title=f"full refresh at {args.members:,} members, {records:,} raw records over {args.days} days")
    steps = ("ingest", "score", "publish", "drift", "record", "snapshot", "compact")
    for col in ("run", "records read", "members", *steps, "total (flow)", "peak RSS", "load avg"):
        table.add_column(col, justify="right")
    for label, wall, peak_bytes, load, r in results:
        s = r["seconds"]
        table.add_row(
            label, f"{r['records_read']:,}", f"{r['members']:,}", *(f"{s.get(k, 0):.2f} s" for k in steps),
            f"{wall:.2f} s", f"{peak_bytes / 2**30:.2f} GiB", f"{load:.1f}",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"NDJSON {nbytes / 2**30:.2f} GiB → archive {archive / 2**30:.2f} GiB "
        f"({nbytes / max(archive, 1):.1f}× smaller); NDJSON left: {left:,} bytes"
    )


if __name__ == "__main__":
    main()
