"""Event-driven reconcile runs, end to end: a real Prefect server with prefect.yaml deployed (its trigger and
concurrency limit), a real process worker, a real `memberpulse serve` and the suite's PostgreSQL.

webhook → the landing's event → the deployment trigger → a run on the worker → the row in member_activity,
with the scheduler off (no cron run can help); a burst coalesces into a few runs; with the Prefect server
stopped the landing keeps answering 200 fast, and a run afterwards catches everything up.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

from memberpulse.landing import mock_events as mock
from tests.flows.test_deployment import POOL, Stack, _cli, _client, _prefect_server, _started, _stop, _tail
from tests.support.net import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SECRET = "ws_event_runs_test_secret"


@contextlib.contextmanager
def _landing(stack: Stack) -> Iterator[str]:
    port = free_port()
    log = stack.logs / "landing.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "memberpulse", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=stack.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=stack.logs,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api/webhooks/whop"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"landing exited:\n{_tail(log)}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, _tail(log)
            time.sleep(0.2)
        yield url
    finally:
        _stop(proc)


@contextlib.contextmanager
def _server_again(stack: Stack) -> Iterator[None]:
    """The Prefect server started again on its port and database."""
    port = stack.api_url.rsplit(":", 1)[1].split("/")[0]
    args = ["server", "start", "--host", "127.0.0.1", "--port", port]
    with _started(stack, "server-again", args, stack.logs) as srv:
        deadline = time.monotonic() + 60
        while True:
            assert srv.poll() is None, _tail(stack.logs / "server-again.log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{stack.api_url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, _tail(stack.logs / "server-again.log")
            time.sleep(0.3)
        yield


def _post(url: str, n: int, tag: str) -> tuple[list[str], list[float]]:
    """Post one went_valid webhook for each of ``n`` new members at once; their ids and answer latencies."""
    ids = [f"mem_{tag}_{i:04d}" for i in range(n)]

    def one(membership_id: str) -> float:
        member = mock.MockMember(membership_id=membership_id, user_id=f"user_{membership_id}")
        body, headers = mock.signed_delivery(mock.went_valid(member, created_at=datetime.now(UTC)), secret=SECRET)
        started = time.perf_counter()
        answer = httpx.post(url, content=body, headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        return time.perf_counter() - started

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        latencies = list(pool.map(one, ids))
    return ids, latencies


def _post_one_by_one_ids(url: str, n: int, tag: str) -> tuple[list[str], list[float]]:
    """``n`` webhooks one after another on one connection: their ids and each answer's latency."""
    ids, latencies = [f"mem_{tag}_{i:04d}" for i in range(n)], []
    with httpx.Client(timeout=10) as client:
        for membership_id in ids:
            member = mock.MockMember(membership_id=membership_id, user_id=f"user_{membership_id}")
            body, headers = mock.signed_delivery(mock.went_valid(member, created_at=datetime.now(UTC)), secret=SECRET)
            started = time.perf_counter()
            answer = client.post(url, content=body, headers=headers)
            latencies.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
    return ids, latencies


def _post_one_by_one(url: str, n: int, tag: str) -> list[float]:
    return _post_one_by_one_ids(url, n, tag)[1]


def _p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * len(values))]


def _wait_rows(dsn: str, ids: list[str], timeout: float, stack: Stack) -> float:
    """Seconds until every id has its member_activity row."""
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as con:
        while True:
            row = con.execute("SELECT count(*) FROM member_activity WHERE membership_id = ANY(%s)", [ids]).fetchone()
            if row is not None and row[0] == len(ids):
                return time.monotonic() - started
            assert time.monotonic() - started < timeout, (
                f"{row} of {len(ids)} rows after {timeout} s\n{_tail(stack.logs / 'worker.log')}"
            )
            time.sleep(0.2)


def _runs_by_state(stack: Stack, deployment_id: object) -> dict[str, int]:
    with _client(stack) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
        )
    counts: dict[str, int] = {}
    for run in runs:
        name = run.state.name if run.state else "?"
        counts[name] = counts.get(name, 0) + 1
    return counts


def _settled(stack: Stack, deployment_id: object, timeout: float = 90) -> dict[str, int]:
    """Run counts once no run of the deployment is queued or running any more."""
    deadline = time.monotonic() + timeout
    while True:
        counts = _runs_by_state(stack, deployment_id)
        busy = {k: v for k, v in counts.items() if k not in ("Completed", "Superseded", "Cancelled", "Failed")}
        if not busy:
            return counts
        assert time.monotonic() < deadline, f"runs still going: {counts}\n{_tail(stack.logs / 'worker.log')}"
        time.sleep(1)


def test_webhooks_trigger_runs_that_coalesce_and_survive_a_prefect_outage(
    tmp_path: Path, migrated_postgres_dsn: str
) -> None:
    with _prefect_server(tmp_path) as stack:
        stack.env.update(SUPABASE_DB_URL=migrated_postgres_dsn, WHOP_WEBHOOK_SECRET=SECRET)
        _cli(stack, "work-pool", "create", POOL, "--type", "process")
        _cli(stack, "--no-prompt", "deploy", "--name", "reconcile")
        with _client(stack) as client:
            [deployment] = client.read_deployments()
            automations = client.read_automations_by_name("reconcile when webhooks land")
            assert len(automations) == 1 and automations[0].enabled

        worker_dir = tmp_path / "worker-cwd"
        worker_dir.mkdir()
        with _started(stack, "worker", ["worker", "start", "--pool", POOL], worker_dir), _landing(stack) as url:
            # One webhook: its row arrives through a triggered run (the scheduler is off: no cron run).
            ids, _ = _post(url, 1, "first")
            first_delay = _wait_rows(migrated_postgres_dsn, ids, timeout=90, stack=stack)
            counts = _settled(stack, deployment.id)
            assert counts.get("Completed", 0) >= 1, counts
            print(f"first webhook's row after {first_delay:.1f} s; runs {counts}")

            # A burst of 500 at once: every row arrives, and the runs do not pile up.
            before = sum(counts.values())
            ids, _ = _post(url, 500, "burst")
            burst_delay = _wait_rows(migrated_postgres_dsn, ids, timeout=180, stack=stack)
            after = _settled(stack, deployment.id)
            completed = after.get("Completed", 0) - counts.get("Completed", 0)
            print(f"burst: rows after {burst_delay:.1f} s; runs {after} ({sum(after.values()) - before} new)")
            assert 1 <= completed <= 4, after
            assert after.get("Failed", 0) == 0, after

            # The Prefect server goes away: the landing still answers every webhook 200, as fast as before.
            up = _post_one_by_one(url, 50, "up")
            assert stack.server is not None
            _stop(stack.server)
            ids, down = _post_one_by_one_ids(url, 100, "outage")
            print(f"answer p95 with Prefect up {_p95(up) * 1e3:.1f} ms, down {_p95(down) * 1e3:.1f} ms")
            assert _p95(down) < max(1.0, 2 * _p95(up)), (up, down)
            landing_log = (stack.logs / "landing.log").read_text()
            assert "Prefect API unreachable" in landing_log, landing_log[-2000:]

            # Back up (same database): a run through the deployment catches the outage's webhooks up.
            with _server_again(stack):
                _cli(stack, "deployment", "run", "reconcile/reconcile")
                _wait_rows(migrated_postgres_dsn, ids, timeout=120, stack=stack)
                _settled(stack, deployment.id)
