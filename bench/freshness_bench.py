"""End-to-end freshness: from a webhook's 200 to its row in Postgres, with the reconcile schedule running.

    .venv/bin/python -m bench.freshness_bench                     # 30 s schedule, 150 s of traffic
    .venv/bin/python -m bench.freshness_bench --interval 60 --duration 300

Everything is real and local: a Prefect server (`prefect server start`), the reconcile flow served on an
interval schedule (`reconcile_flow.serve`, Prefect's runner executing each scheduled run), a
`memberpulse serve` landing process, and a PostgreSQL server (the test suite's harness) with the migrations
applied. A sender posts one signed webhook for a new member every second; a watcher polls
`member_activity` and records when each member's row appears. The production schedule is every 5 minutes:
freshness there is the wait for the next run (uniform over the interval) plus one run's duration, so the
bench reports the measured run duration too and derives the 5-minute figures from it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

from bench.freshness_stack import Processes, RowWatcher, migrated_database, pct, post_went_valid, wait_http
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[1]
SECRET = "ws_freshness_bench_" + os.urandom(8).hex()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=int, default=30, help="reconcile schedule, seconds")
    parser.add_argument("--duration", type=int, default=150, help="seconds of webhook traffic")
    args = parser.parse_args()
    console = Console(width=160)

    with migrated_database() as dsn, tempfile.TemporaryDirectory(prefix="freshness-") as tmp:
        root = Path(tmp)
        prefect_port, landing_port = free_port(), free_port()
        env = {
            **os.environ,
            "PREFECT_HOME": str(root / "prefect"),
            "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_RUNNER_POLL_FREQUENCY": "2",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "MEMBERPULSE_DATA_DIR": str(root / "data"),
            "SUPABASE_DB_URL": dsn,
            "WHOP_WEBHOOK_SECRET": SECRET,
        }
        procs = Processes(root, env)
        try:
            procs.start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                         "--port", str(prefect_port)])  # fmt: skip
            procs.start([sys.executable, "-m", "memberpulse", "serve", "--port", str(landing_port)])
            wait_http(f"http://127.0.0.1:{prefect_port}/api/health")
            url = f"http://127.0.0.1:{landing_port}/api/webhooks/whop"
            wait_http(url)
            serve_code = (
                "from datetime import timedelta\n"
                "from memberpulse.flows.reconcile import reconcile_flow\n"
                f"reconcile_flow.serve(name='freshness-bench', interval=timedelta(seconds={args.interval}), limit=1)\n"
            )
            procs.start([sys.executable, "-c", serve_code], cwd=ROOT)
            console.print(
                f"Prefect server, landing and a {args.interval} s reconcile schedule are up; "
                f"sending for {args.duration} s"
            )
            with RowWatcher(dsn, poll_seconds=0.2) as rows, httpx.Client(timeout=10) as client:
                end, n = time.monotonic() + args.duration, 0
                while time.monotonic() < end:
                    mid = f"mem_fresh_{n:05d}"
                    if post_went_valid(client, url, mid, secret=SECRET):
                        rows.acked[mid] = time.time()
                    n += 1
                    time.sleep(1.0)
                rows.wait_for(list(rows.acked), timeout=3 * args.interval + 120)
            with psycopg.connect(dsn) as con:
                runs = con.execute(
                    "SELECT extract(epoch FROM finished_at - started_at) FROM pipeline_runs WHERE status = 'completed'"
                ).fetchall()
        finally:
            procs.stop_all()

    _print(console, args.interval, len(rows.acked), rows.delays(list(rows.acked)), [float(r[0]) for r in runs])


def _print(console: Console, interval: int, acked: int, delays: list[float], durations: list[float]) -> None:
    run_mean = statistics.fmean(durations) if durations else float("nan")
    table = Table(title=f"freshness: webhook 200 → row in Postgres, reconcile every {interval} s")
    for col in ("webhooks acked", "visible", "p50", "p95", "max", "reconcile runs", "mean run (flow)"):
        table.add_column(col, justify="right")
    table.add_row(
        str(acked),
        str(len(delays)),
        f"{statistics.median(delays):.1f} s",
        f"{pct(delays, 0.95):.1f} s",
        f"{max(delays):.1f} s",
        str(len(durations)),
        f"{run_mean:.1f} s",
    )
    console.print(table)
    interval_5m = timedelta(minutes=5).total_seconds()
    console.print(
        f"with the production 5-minute schedule: mean ≈ {interval_5m / 2 + run_mean:.0f} s, "
        f"worst ≈ {interval_5m + run_mean:.0f} s (half / all of the interval, plus one run)"
    )


if __name__ == "__main__":
    main()
