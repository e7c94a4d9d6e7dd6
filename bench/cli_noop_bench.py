"""``memberpulse run`` with nothing new: wall time of the whole command, start-up included.

    .venv/bin/python -m bench.cli_noop_bench [--runs N] [--members N]

Builds a throwaway data dir holding raw webhooks for ``--members`` members, runs ``memberpulse run`` once
to ingest them, then times ``--runs`` further runs in which nothing is new (a fresh interpreter each time,
exactly as a user or cron starts it). No publish target is set. Reports min / median / max wall seconds,
the CPU seconds of the child processes (the machine is shared: wall time depends on the neighbours, CPU
time much less) and the load average.

For comparison, ``--prefect-runs N`` times the same no-op run as a Prefect flow run in a fresh interpreter
(``reconcile_flow()`` without a Prefect server: Prefect starts its temporary API server), which is how
``memberpulse run`` ran before it called the steps directly.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from memberpulse.landing import mock_events as mock
from tests.support.reconcile_testkit import append_raw, raw_record

TARGET_SECONDS = 3.0


def seed(data_dir: Path, members: int) -> None:
    now = datetime.now(UTC)
    lines = []
    for n in range(members):
        who = mock.MockMember(membership_id=f"mem_bench_{n:06d}", user_id=f"user_bench_{n:06d}")
        lines.append(raw_record(mock.went_valid(who, created_at=now - timedelta(days=n % 40))))
    append_raw(data_dir, lines, day=now.date().isoformat())


CLI = [sys.executable, "-m", "memberpulse", "run"]
FLOW = [sys.executable, "-c", "from memberpulse.flows.reconcile import reconcile_flow; reconcile_flow()"]


def run_cli(env: dict[str, str], cwd: Path, argv: list[str] = CLI) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"memberpulse run failed ({done.returncode}): {done.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--prefect-runs", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cli-noop-bench-") as tmp:
        root = Path(tmp)
        seed(root / "data", args.members)
        keep = ("PATH", "HOME", "LANG", "TERM")
        env = {k: os.environ[k] for k in keep if k in os.environ} | {"MEMBERPULSE_DATA_DIR": str(root / "data")}
        first = run_cli(env, root)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        walls = [run_cli(env, root) for _ in range(args.runs)]
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        flow_env = env | {"PREFECT_HOME": str(root / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                          "DO_NOT_TRACK": "1", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}  # fmt: skip
        flows = [run_cli(flow_env, root, FLOW) for _ in range(args.prefect_runs)]
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / args.runs
    median = statistics.median(walls)
    print(f"members: {args.members}, first run (ingest): {first:.2f} s, no-op runs: {args.runs}")
    print(f"no-op wall s: min {min(walls):.2f}  median {median:.2f}  max {max(walls):.2f}   CPU s/run {cpu:.2f}")
    if flows:
        print(f"as a Prefect flow run, wall s: {' '.join(f'{w:.2f}' for w in flows)}")
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())}, cores: {os.cpu_count()}")
    print(f"target ≤ {TARGET_SECONDS} s wall: {'met' if median <= TARGET_SECONDS else 'MISSED'} (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
