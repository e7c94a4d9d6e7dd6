"""Event-driven freshness: from a webhook's 200 to its row in Postgres, through prefect.yaml's deployment trigger.

    .venv/bin/python -m bench.event_freshness_bench      # 60 s at one webhook / 200 ms, then a burst of 500
    .venv/bin/python -m bench.event_freshness_bench --duration 30 --every 0.5 --burst 200

Everything is real and local: a Prefect server (`prefect server start`, scheduler off so no cron run can help),
`prefect deploy --name reconcile` from prefect.yaml (its trigger and concurrency limit), a Prefect process
worker (`PREFECT_WORKER_QUERY_SECONDS=1`), a `memberpulse serve` landing that emits the run signal, and a
PostgreSQL server (the test suite's harness) with the migrations applied. A sender posts one signed webhook for
a new member every `--every` seconds; a watcher polls `member_activity` and records when each row appears.
Then `--burst` webhooks at once: every row must arrive, and the bench counts the reconcile runs by state.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from bench.freshness_stack import Processes, RowWatcher, migrated_database, pct, post_went_valid, wait_http
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[1]
SECRET = "ws_event_freshness_" + os.urandom(8).hex()
PREFECT = str(Path(sys.executable).with_name("prefect"))


def run_counts(env: dict[str, str]) -> dict[str, int]:
    """Flow runs on the server by state name (Completed, Superseded, AwaitingConcurrencySlot, ...)."""
    counts: dict[str, int] = {}
    offset = 0
    while True:
        page = httpx.post(
            f"{env['PREFECT_API_URL']}/flow_runs/filter", json={"limit": 200, "offset": offset}, timeout=30
        ).json()
        for run in page:
            name = (run.get("state") or {}).get("name", "?")
            counts[name] = counts.get(name, 0) + 1
        if len(page) < 200:
            return counts
        offset += 200


def settle(env: dict[str, str], timeout: float = 180) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        counts = run_counts(env)
        if all(k in ("Completed", "Superseded", "Cancelled", "Failed", "Crashed") for k in counts):
            return counts
        if time.monotonic() > deadline:
            return counts
        time.sleep(1)


def _env(root: Path, dsn: str, prefect_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(root / "prefect"),
        PREFECT_API_URL=f"http://127.0.0.1:{prefect_port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS="2",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        PREFECT_CLI_PROMPT="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        MEMBERPULSE_DATA_DIR=str(root / "data"),
        SUPABASE_DB_URL=dsn,
        WHOP_WEBHOOK_SECRET=SECRET,
    )
    return env


def _start_stack(procs: Processes, env: dict[str, str], prefect_port: int, landing_port: int) -> str:
    """Prefect server, the reconcile deployment from prefect.yaml, a process worker and a landing; its URL."""
    procs.start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)])
    wait_http(f"http://127.0.0.1:{prefect_port}/api/health")
    for cmd in (
        ["work-pool", "create", "memberpulse-process", "--type", "process"],
        ["--no-prompt", "deploy", "--name", "reconcile"],
    ):
        subprocess.run([PREFECT, *cmd], cwd=ROOT, env=env, check=True, capture_output=True)
    procs.start([PREFECT, "worker", "start", "--pool", "memberpulse-process"])
    procs.start([sys.executable, "-m", "memberpulse", "serve", "--port", str(landing_port)])
    url = f"http://127.0.0.1:{landing_port}/api/webhooks/whop"
    wait_http(url)
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60, help="seconds of steady traffic")
    parser.add_argument("--every", type=float, default=0.2, help="seconds between webhooks")
    parser.add_argument("--burst", type=int, default=500, help="webhooks sent at once afterwards")
    args = parser.parse_args()
    console = Console(width=160)

    with migrated_database() as dsn, tempfile.TemporaryDirectory(prefix="event-freshness-") as tmp:
        root = Path(tmp)
        prefect_port, landing_port = free_port(), free_port()
        env = _env(root, dsn, prefect_port)
        procs = Processes(root, env)
        try:
            url = _start_stack(procs, env, prefect_port, landing_port)
            console.print(
                f"Prefect server, worker and landing up; one webhook every {args.every} s for "
                f"{args.duration} s (load average {os.getloadavg()[0]:.1f})"
            )
            with RowWatcher(dsn) as rows:
                with httpx.Client(timeout=10) as client:
                    end, n, next_at = time.monotonic() + args.duration, 0, time.monotonic()
                    while time.monotonic() < end:
                        mid = f"mem_steady_{n:05d}"
                        if post_went_valid(client, url, mid, secret=SECRET):
                            rows.acked[mid] = time.time()
                        n += 1
                        next_at += args.every
                        time.sleep(max(0.0, next_at - time.monotonic()))
                steady = list(rows.acked)
                rows.wait_for(steady, timeout=120)
                steady_runs, load_steady = settle(env), os.getloadavg()

                burst_ids = [f"mem_burst_{i:04d}" for i in range(args.burst)]
                burst_started = time.time()

                def one(mid: str) -> None:
                    with httpx.Client(timeout=30) as c:
                        if post_went_valid(c, url, mid, secret=SECRET):
                            rows.acked[mid] = time.time()

                with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
                    list(pool.map(one, burst_ids))
                rows.wait_for(burst_ids, timeout=180)
            last = max((rows.visible.get(m, float("nan")) for m in burst_ids), default=0) - burst_started
            all_runs, load_burst = settle(env), os.getloadavg()
        finally:
            procs.stop_all()

    delays = rows.delays(steady)
    table = Table(title=f"event-driven freshness: one webhook every {args.every} s for {args.duration} s")
    for col in ("webhooks acked", "rows arrived", "p50", "p95", "max", "runs (by state)", "load avg 1/5/15"):
        table.add_column(col, justify="right")
    table.add_row(
        str(len(steady)),
        str(len(delays)),
        f"{statistics.median(delays):.1f} s",
        f"{pct(delays, 0.95):.1f} s",
        f"{max(delays):.1f} s",
        str(steady_runs),
        " / ".join(f"{x:.1f}" for x in load_steady),
    )
    console.print(table)
    burst_runs = {k: v - steady_runs.get(k, 0) for k, v in all_runs.items()}
    arrived = sum(1 for m in burst_ids if m in rows.visible)
    console.print(
        f"burst of {args.burst} at once: {sum(1 for m in burst_ids if m in rows.acked)} acked, {arrived} rows "
        f"arrived, the last {last:.1f} s after the burst began; runs it caused: {burst_runs}; "
        f"load avg {' / '.join(f'{x:.1f}' for x in load_burst)}"
    )


if __name__ == "__main__":
    main()
