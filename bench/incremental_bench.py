"""What an incremental reconcile run costs as history grows: 1M members over 5M and 10M history events.

    .venv/bin/python -m bench.incremental_bench                       # 1M members; 5M and 10M events; 1k new
    .venv/bin/python -m bench.incremental_bench --members 20000 --sizes 50000 100000   # a quick run

For each history size, in one invocation (so the two are measured side by side): raw landing segments from the
transforms benchmark's generator, a real PostgreSQL server with the migrations applied, and the real reconcile
flow (Prefect test harness): a first run over all history, then a run with ``--new`` new events (as-of five
minutes later), then a run with nothing new (five minutes later again). Prints each step's wall seconds from
the run report, the flow body (their sum) and the load average around the runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from rich.console import Console
from rich.table import Table

from bench.reconcile_bench import bench_settings, peak_rss, write_segments
from bench.transforms_synth import BASE, SPAN_S

STEPS = ("ingest", "score", "publish", "drift", "snapshot", "report", "record", "compact")


def _body_seconds(result: dict[str, Any]) -> float:
    """The flow body: the sum of its steps as the run report times them."""
    return float(sum(result["seconds"].values()))


def bench_size(members: int, events: int, new: int, use_postgres: bool) -> list[tuple[str, float, int, dict[str, Any]]]:
    from memberpulse.flows.reconcile import reconcile_flow
    from tests.support.postgres import start_server

    as_of = BASE + timedelta(seconds=SPAN_S + SPAN_S // 3 + 86_400)
    rows = []
    with tempfile.TemporaryDirectory(prefix="incremental-bench-") as tmp:
        data_dir = Path(tmp)
        write_segments(data_dir, members=members, start=0, count=events, name="history")
        server = start_server() if use_postgres else None
        try:
            settings = bench_settings(data_dir, server)
            runs = (("first run (all history)", 0, 0), (f"+{new:,} new events", new, 5), ("nothing new", 0, 10))
            for label, count, minutes in runs:
                if count:
                    write_segments(data_dir, members=members, start=events, count=count, name="new")
                with peak_rss() as peak:
                    t = time.perf_counter()
                    result = reconcile_flow(as_of=as_of + timedelta(minutes=minutes), settings=settings)
                    wall = time.perf_counter() - t
                rows.append((label, wall, peak[0], result))
        finally:
            if server is not None:
                server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000_000, 10_000_000], help="history events")
    parser.add_argument("--new", type=int, default=1_000)
    parser.add_argument("--no-postgres", action="store_true", help="publish nowhere (snapshot only)")
    args = parser.parse_args()
    console = Console(width=220)
    from prefect.testing.utilities import prefect_test_harness

    results = []
    with prefect_test_harness():
        for size in args.sizes:
            load_before = os.getloadavg()
            rows = bench_size(args.members, size, args.new, not args.no_postgres)
            results.append((size, load_before, os.getloadavg(), rows))
            console.print(f"{size:,} events done; load average {load_before[0]:.1f} → {os.getloadavg()[0]:.1f}")

    table = Table(title=f"reconcile at {args.members:,} members, incremental cost vs history size")
    for col in ("history", "run", "read", "ins/upd", *STEPS, "flow body", "call wall", "peak RSS", "load 1m"):
        table.add_column(col, justify="right")
    for size, before, after, rows in results:
        for label, wall, peak_bytes, r in rows:
            s = r["seconds"]
            table.add_row(
                f"{size:,}", label, f"{r['records_read']:,}", f"{r['inserted']:,}/{r['updated']:,}",
                *(f"{s.get(k, 0):.2f}" for k in STEPS), f"{_body_seconds(r):.2f} s", f"{wall:.2f} s",
                f"{peak_bytes / 2**30:.2f} GiB", f"{before[0]:.1f}→{after[0]:.1f}",
            )  # fmt: skip
    console.print(table)
    if len(results) == 2:
        small, large = (_body_seconds(rows[1][3]) for _, _, _, rows in results)
        console.print(f"incremental flow body, {results[1][0]:,} vs {results[0][0]:,} events: {large / small:.2f}x")


if __name__ == "__main__":
    main()
