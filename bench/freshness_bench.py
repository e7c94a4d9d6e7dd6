"""End-to-end freshness: from a webhook's 200 to its row in Postgres, with the reconcile schedule running.

    .venv/bin/python bench/freshness_bench.py                     # 30 s schedule, 150 s of traffic
    .venv/bin/python bench/freshness_bench.py --interval 60 --duration 300

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
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tests.support.net import free_port  # noqa: E402

SECRET = "ws_freshness_bench_" + os.urandom(8).hex()


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=int, default=30, help="reconcile schedule, seconds")
    parser.add_argument("--duration", type=int, default=150, help="seconds of webhook traffic")
    args = parser.parse_args()
    console = Console(width=160)

    from memberpulse.flows.publish import apply_migrations
    from memberpulse.landing import mock_events as mock
    from tests.support.postgres import start_server

    procs: list[subprocess.Popen[bytes]] = []
    server = start_server()
    with tempfile.TemporaryDirectory(prefix="freshness-") as tmp:
        root = Path(tmp)
        db = server.create_database()
        dsn = server.dsn(db)
        apply_migrations(dsn)
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
        logs = open(root / "processes.log", "wb")  # noqa: SIM115 - closed at the end
        try:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "prefect",
                        "server",
                        "start",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(prefect_port),
                    ],
                    env=env,
                    stdout=logs,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "memberpulse", "serve", "--port", str(landing_port)],
                    env=env,
                    stdout=logs,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            wait_http(f"http://127.0.0.1:{prefect_port}/api/health")
            url = f"http://127.0.0.1:{landing_port}/api/webhooks/whop"
            wait_http(url)
            serve_code = (
                "from datetime import timedelta\n"
                "from memberpulse.flows.reconcile import reconcile_flow\n"
                f"reconcile_flow.serve(name='freshness-bench', interval=timedelta(seconds={args.interval}), limit=1)\n"
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", serve_code],
                    cwd=ROOT,
                    env=env,
                    stdout=logs,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            console.print(
                f"Prefect server, landing and a {args.interval} s reconcile schedule are up; "
                f"sending for {args.duration} s"
            )

            acked: dict[str, float] = {}
            visible: dict[str, float] = {}
            stop = threading.Event()

            def watch() -> None:
                with psycopg.connect(dsn, autocommit=True) as con:
                    while not stop.is_set():
                        pending = [m for m in acked if m not in visible]
                        if pending:
                            rows = con.execute(
                                "SELECT membership_id FROM member_activity WHERE membership_id = ANY(%s)", [pending]
                            ).fetchall()
                            now = time.time()
                            for (mid,) in rows:
                                visible.setdefault(mid, now)
                        time.sleep(0.2)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            with httpx.Client(timeout=10) as client:
                end = time.monotonic() + args.duration
                n = 0
                while time.monotonic() < end:
                    who = mock.MockMember(membership_id=f"mem_fresh_{n:05d}", user_id=f"user_fresh_{n:05d}")
                    body, headers = mock.signed_delivery(
                        mock.went_valid(who, created_at=datetime.now(UTC)), secret=SECRET
                    )
                    if client.post(url, content=body, headers=headers).status_code == 200:
                        acked[who.membership_id] = time.time()
                    n += 1
                    time.sleep(1.0)
            drain_until = time.monotonic() + 3 * args.interval + 120
            while len(visible) < len(acked) and time.monotonic() < drain_until:
                time.sleep(0.5)
            stop.set()
            watcher.join()
            with psycopg.connect(dsn) as con:
                runs = con.execute(
                    "SELECT extract(epoch FROM finished_at - started_at) FROM pipeline_runs WHERE status = 'completed'"
                ).fetchall()
        finally:
            for proc in reversed(procs):
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(proc.pid, signal.SIGKILL)
            logs.close()
            server.stop()

    delays = [visible[m] - acked[m] for m in acked if m in visible]
    durations = [float(r[0]) for r in runs]
    run_mean = statistics.fmean(durations) if durations else float("nan")
    table = Table(title=f"freshness: webhook 200 → row in Postgres, reconcile every {args.interval} s")
    for col in ("webhooks acked", "visible", "p50", "p95", "max", "reconcile runs", "mean run (flow)"):
        table.add_column(col, justify="right")
    table.add_row(
        str(len(acked)),
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
