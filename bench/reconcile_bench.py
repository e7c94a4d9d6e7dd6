"""Cost of one reconcile run at scale: 1M members, then 10k new events on top.

    .venv/bin/python -m bench.reconcile_bench                     # 1M members, 3M history events, 10k new
    .venv/bin/python -m bench.reconcile_bench --members 100000 --events 300000   # a quick run

Builds raw landing segments with the transforms benchmark's generator (all payload shapes, ~3% redeliveries),
starts a real PostgreSQL server (the test suite's harness) with the migrations applied, and runs the real
reconcile flow (Prefect test harness) twice: the first run ingests all history and publishes every member;
the second ingests only the new events. Prints wall time per step and peak RSS for each run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from rich.console import Console
from rich.table import Table

from bench.transforms_synth import BASE, SPAN_S, generate_raw, to_ndjson


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_rss() -> Iterator[list[int]]:
    """Samples this process's RSS every 20 ms; the list holds the peak once the block ends."""
    peak = [_rss_bytes()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes())


def write_segments(
    data_dir: Path, *, members: int, start: int, count: int, name: str, chunk: int = 1_000_000, companies: int = 1
) -> int:
    path = data_dir / "landing" / "dt=2026-11-27" / f"{name}.ndjson"
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(path, "ab") as fh:
        for offset in range(start, start + count, chunk):
            size = min(chunk, start + count - offset)
            raw = generate_raw(members, start + count, start=offset, count=size, companies=companies)
            fh.write(to_ndjson(raw))
            written += raw.height
    return written


def bench_settings(data_dir: Path, server: Any) -> Any:
    """Settings for a bench's data dir; with a PostgreSQL ``server`` (tests.support.postgres), a fresh
    database with the migrations applied, published to."""
    from memberpulse.settings import Settings  # after the Prefect environment above is set

    env: dict[str, object] = {"MEMBERPULSE_DATA_DIR": str(data_dir), "MEMBERPULSE_SNAPSHOTS_KEEP": 2}
    if server is not None:
        from memberpulse.flows.publish import apply_migrations

        db = server.create_database()
        apply_migrations(server.dsn(db))
        env["SUPABASE_DB_URL"] = server.dsn(db)
    return Settings(**env)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=3_000_000, help="history events (incl. one join per member)")
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--no-postgres", action="store_true", help="publish nowhere (snapshot only)")
    args = parser.parse_args()
    console = Console(width=200)

    from prefect.testing.utilities import prefect_test_harness

    from memberpulse.flows.reconcile import reconcile_flow
    from tests.support.postgres import start_server

    as_of = BASE + timedelta(seconds=SPAN_S + SPAN_S // 3 + 86_400)
    with tempfile.TemporaryDirectory(prefix="reconcile-bench-") as tmp:
        data_dir = Path(tmp)
        t0 = time.perf_counter()
        history = write_segments(data_dir, members=args.members, start=0, count=args.events, name="history")
        console.print(f"generated {history:,} raw records in {time.perf_counter() - t0:.1f} s")

        server = None if args.no_postgres else start_server()
        try:
            settings = bench_settings(data_dir, server)
            results = []
            with prefect_test_harness():
                for label, new in (("initial (all history)", 0), (f"+{args.new:,} new events", args.new)):
                    if new:
                        write_segments(data_dir, members=args.members, start=args.events, count=new, name="new")
                    with peak_rss() as peak:
                        t = time.perf_counter()
                        result = reconcile_flow(as_of=as_of, settings=settings)
                        wall = time.perf_counter() - t
                    results.append((label, wall, peak[0], result))
        finally:
            if server is not None:
                server.stop()

    table = Table(title=f"reconcile at {args.members:,} members ({args.events:,} history events)")
    for col in (
        "run",
        "records read",
        "members",
        "inserted/updated",
        "ingest",
        "score",
        "publish",
        "drift",
        "record",
        "snapshot",
        "total (flow)",
        "peak RSS",
    ):
        table.add_column(col, justify="right")
    for label, wall, peak_bytes, r in results:
        s = r["seconds"]
        table.add_row(
            label, f"{r['records_read']:,}", f"{r['members']:,}", f"{r['inserted']:,}/{r['updated']:,}",
            *(f"{s.get(k, 0):.2f} s" for k in ("ingest", "score", "publish", "drift", "record", "snapshot")),
            f"{wall:.2f} s", f"{peak_bytes / 2**30:.2f} GiB",
        )  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
