"""Event-driven freshness: from a webhook's 200 to its row in Postgres, through prefect.yaml's deployment trigger.

    .venv/bin/python bench/event_freshness_bench.py      # 60 s at one webhook / 200 ms, then a burst of 500
    .venv/bin/python bench/event_freshness_bench.py --duration 30 --every 0.5 --burst 200

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
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.freshness_bench import pct, wait_http  # noqa: E402
from tests.support.net import free_port  # noqa: E402

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


def post(client: httpx.Client, url: str, membership_id: str) -> bool:
    from memberpulse.landing import mock_events as mock

    who = mock.MockMember(membership_id=membership_id, user_id=f"user_{membership_id}")
    body, headers = mock.signed_delivery(mock.went_valid(who, created_at=datetime.now(UTC)), secret=SECRET)
    return client.post(url, content=body, headers=headers).status_code == 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60, help="seconds of steady traffic")
    parser.add_argument("--every", type=float, default=0.2, help="seconds between webhooks")
    parser.add_argument("--burst", type=int, default=500, help="webhooks sent at once afterwards")
    args = parser.parse_args()
    console = Console(width=160)

    from memberpulse.flows.publish import apply_migrations
    from tests.support.postgres import start_server

    procs: list[subprocess.Popen[bytes]] = []
    server = start_server()
    with tempfile.TemporaryDirectory(prefix="event-freshness-") as tmp:
        root = Path(tmp)
        dsn = server.dsn(server.create_database())
        apply_migrations(dsn)
        prefect_port, landing_port = free_port(), free_port()
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
        logs = open(root / "processes.log", "wb")  # noqa: SIM115 - closed at the end

        def start(cmd: list[str]) -> None:
            procs.append(
                subprocess.Popen(cmd, cwd=root, env=env, stdout=logs, stderr=subprocess.STDOUT, start_new_session=True)
            )

        try:
            start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)])
            wait_http(f"http://127.0.0.1:{prefect_port}/api/health")
            for cmd in (
                ["work-pool", "create", "memberpulse-process", "--type", "process"],
                ["--no-prompt", "deploy", "--name", "reconcile"],
            ):
                subprocess.run([PREFECT, *cmd], cwd=ROOT, env=env, check=True, capture_output=True)
            start([PREFECT, "worker", "start", "--pool", "memberpulse-process"])
            start([sys.executable, "-m", "memberpulse", "serve", "--port", str(landing_port)])
            url = f"http://127.0.0.1:{landing_port}/api/webhooks/whop"
            wait_http(url)
            console.print(
                f"Prefect server, worker and landing up; one webhook every {args.every} s for "
                f"{args.duration} s (load average {os.getloadavg()[0]:.1f})"
            )

            acked: dict[str, float] = {}
            visible: dict[str, float] = {}
            stop = threading.Event()

            def watch() -> None:
                with psycopg.connect(dsn, autocommit=True) as con:
                    while not stop.is_set():
                        pending = [m for m in list(acked) if m not in visible]
                        if pending:
                            rows = con.execute(
                                "SELECT membership_id FROM member_activity WHERE membership_id = ANY(%s)", [pending]
                            ).fetchall()
                            now = time.time()
                            for (mid,) in rows:
                                visible.setdefault(mid, now)
                        time.sleep(0.1)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            with httpx.Client(timeout=10) as client:
                end, n = time.monotonic() + args.duration, 0
                next_at = time.monotonic()
                while time.monotonic() < end:
                    mid = f"mem_steady_{n:05d}"
                    if post(client, url, mid):
                        acked[mid] = time.time()
                    n += 1
                    next_at += args.every
                    time.sleep(max(0.0, next_at - time.monotonic()))
            steady = dict(acked)
            deadline = time.monotonic() + 120
            while any(m not in visible for m in steady) and time.monotonic() < deadline:
                time.sleep(0.5)
            steady_runs = settle(env)
            load_steady = os.getloadavg()

            burst_ids = [f"mem_burst_{i:04d}" for i in range(args.burst)]
            burst_started = time.time()

            def one(mid: str) -> None:
                with httpx.Client(timeout=30) as c:
                    if post(c, url, mid):
                        acked[mid] = time.time()

            with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
                list(pool.map(one, burst_ids))
            deadline = time.monotonic() + 180
            while any(m not in visible for m in burst_ids) and time.monotonic() < deadline:
                time.sleep(0.5)
            burst_all_visible = max((visible.get(m, float("nan")) for m in burst_ids), default=0) - burst_started
            stop.set()
            watcher.join()
            all_runs = settle(env)
            load_burst = os.getloadavg()
        finally:
            for proc in reversed(procs):
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(proc.pid, signal.SIGKILL)
            logs.close()
            server.stop()

    delays = [visible[m] - steady[m] for m in steady if m in visible]
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
    arrived = sum(1 for m in burst_ids if m in visible)
    console.print(
        f"burst of {args.burst} at once: {sum(1 for m in burst_ids if m in acked)} acked, {arrived} rows "
        f"arrived, the last {burst_all_visible:.1f} s after the burst began; runs it caused: {burst_runs}; "
        f"load avg {' / '.join(f'{x:.1f}' for x in load_burst)}"
    )


if __name__ == "__main__":
    main()
