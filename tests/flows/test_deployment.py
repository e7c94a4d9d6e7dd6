"""prefect.yaml, end to end: a real Prefect server, `prefect deploy`, a real process worker, real flow runs.

The steps are docs/deploy.md's "On one machine, for development" commands, run from the repository root
against a throwaway server (its own PREFECT_HOME and SQLite database on a free 127.0.0.1 port). The scheduler
service is off so that only the runs this test triggers execute; the schedules themselves are asserted on the
deployments.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.schedules import CronSchedule
from prefect.settings import PREFECT_API_URL, temporary_settings

from memberpulse.flows.snapshot import open_latest
from tests.support.net import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "memberpulse-process"
EXPECTED_CRON = {"reconcile": "*/5 * * * *", "backfill": "0 3 * * *"}
# Variables that would point a flow at real Whop or Supabase; blanked so the runs stay on this machine.
BLANKED = ("WHOP_API_KEY", "WHOP_COMPANY_ID", "NEXT_PUBLIC_WHOP_COMPANY_ID")
REMOVED = (
    "SUPABASE_DB_URL",
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "PREFECT_PROFILE",
    "PREFECT_API_KEY",
)


@dataclass
class Stack:
    api_url: str
    env: dict[str, str]
    data_dir: Path
    logs: Path
    server: subprocess.Popen[bytes] | None = None


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group (the worker's flow-run children too), SIGKILL whatever outlives the grace."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _cli(stack: Stack, *args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        [PREFECT, *args], cwd=cwd, env=stack.env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@contextlib.contextmanager
def _started(stack: Stack, name: str, args: list[str], cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = stack.logs / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [PREFECT, *args],
            cwd=cwd,
            env=stack.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        _stop(proc)


@contextlib.contextmanager
def _client(stack: Stack) -> Iterator[SyncPrefectClient]:
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
        yield client


def _trigger(stack: Stack, deployment: str) -> UUID:
    out = _cli(stack, "deployment", "run", deployment)
    match = re.search(r"UUID: ([0-9a-f-]{36})", out)
    assert match, out
    return UUID(match.group(1))


def _wait_final(client: SyncPrefectClient, run_id: UUID, stack: Stack, timeout: float = 60) -> FlowRun:
    deadline = time.monotonic() + timeout
    while True:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        assert time.monotonic() < deadline, f"flow run {run_id} still {run.state}:\n{_tail(stack.logs / 'worker.log')}"
        time.sleep(0.5)


def _wait_for_log(client: SyncPrefectClient, run_ids: list[UUID], text: str, timeout: float) -> list[str]:
    """Messages of these runs' logs containing ``text``; a run ships its last logs as it exits, so wait."""
    deadline = time.monotonic() + timeout
    while True:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)))
        found = [log.message for log in logs if text in log.message]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _deployments_in_yaml() -> dict[str, str]:
    config: dict[str, Any] = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"]: d["entrypoint"] for d in config["deployments"]}


@contextlib.contextmanager
def _prefect_server(tmp_path: Path) -> Iterator[Stack]:
    """A throwaway Prefect server on a free port; the stack's env points the CLI and workers at it."""
    port = free_port()
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if k not in REMOVED and not k.startswith("PREFECT_")}
    env.update({k: "" for k in BLANKED})
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        PREFECT_CLI_PROMPT="false",
        PREFECT_WORKER_QUERY_SECONDS="1",
        # A run waiting for its deployment's concurrency slot is retried after this long (default 30 s).
        PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS="1",
        PREFECT_LOGGING_EXTRA_LOGGERS="memberpulse",
        MEMBERPULSE_DATA_DIR=str(tmp_path / "data"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("PYTHONPATH", None)  # flows are imported from the installed package, never from a path we add
    stack = Stack(api_url=env["PREFECT_API_URL"], env=env, data_dir=tmp_path / "data", logs=tmp_path)
    with _started(stack, "server", ["server", "start", "--host", "127.0.0.1", "--port", str(port)], tmp_path) as srv:
        stack.server = srv
        deadline = time.monotonic() + 60
        while True:
            assert srv.poll() is None, f"prefect server exited:\n{_tail(tmp_path / 'server.log')}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{stack.api_url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"prefect server not up:\n{_tail(tmp_path / 'server.log')}"
            time.sleep(0.3)
        yield stack


def test_prefect_yaml_deploys_and_runs_through_a_process_worker(tmp_path: Path) -> None:
    deployments = _deployments_in_yaml()
    assert set(deployments) == {"reconcile", "backfill"}
    for entrypoint in deployments.values():  # module paths into the installed package, not checkout files
        assert importlib.util.find_spec(entrypoint.rsplit(".", 1)[0]) is not None, entrypoint
    present = set(deployments)
    started = time.monotonic()

    def mark(step: str) -> None:  # where the time goes: shown with -s, and by pytest on a failure
        print(f"{step} at {time.monotonic() - started:.1f}s", flush=True)

    with _prefect_server(tmp_path) as stack:
        mark("server up")

        _cli(stack, "work-pool", "create", POOL, "--type", "process")
        mark("pool created")
        _cli(stack, "--no-prompt", "deploy", "--all")
        mark("deployed")

        with _client(stack) as client:
            deployed = {d.name: d for d in client.read_deployments()}
            assert set(deployed) == present
            for name, deployment in deployed.items():
                assert deployment.entrypoint == deployments[name]
                assert deployment.work_pool_name == POOL
                assert [s.schedule for s in deployment.schedules] == [
                    CronSchedule(cron=EXPECTED_CRON[name], timezone="UTC")
                ]
                assert deployment.global_concurrency_limit is not None
                assert deployment.global_concurrency_limit.limit == 1
                assert deployment.concurrency_options is not None
                assert deployment.concurrency_options.collision_strategy == "ENQUEUE"
                assert deployment.pull_steps == []  # nothing ties a run to this machine or directory
            flow_names = {name: client.read_flow(d.flow_id).name for name, d in deployed.items()}

        # The worker runs from elsewhere: each run imports its flow from the installed package.
        worker_dir = tmp_path / "worker-cwd"
        worker_dir.mkdir()
        with _started(stack, "worker", ["worker", "start", "--pool", POOL], worker_dir):
            # The docs' command first; then a second backfill at once (it must wait: concurrency limit 1,
            # ENQUEUE) and, when the flow exists, a reconcile alongside (another deployment: no waiting).
            run_ids = {"backfill": _trigger(stack, f"{flow_names['backfill']}/backfill")}
            mark("triggered")
            with _client(stack) as client:
                run_ids["backfill again"] = client.create_flow_run_from_deployment(deployed["backfill"].id).id
                if "reconcile" in present:
                    run_ids["reconcile"] = client.create_flow_run_from_deployment(deployed["reconcile"].id).id
                runs = {name: _wait_final(client, run_id, stack, timeout=90) for name, run_id in run_ids.items()}
                for name, run in runs.items():
                    assert run.state is not None and run.state.is_completed(), (
                        f"{name}: {run.state}\n{_tail(tmp_path / 'worker.log')}"
                    )
                mark("runs completed")
                said = {
                    name: _wait_for_log(client, [run_ids[name]], "backfill skipped", timeout=30)
                    for name in ("backfill", "backfill again")
                }

    assert all(said.values()), f"each backfill run says it skipped (no Whop credentials): {said}"
    assert not (stack.data_dir / "warehouse" / "backfill").exists()
    first, second = sorted((runs["backfill"], runs["backfill again"]), key=lambda r: r.start_time or 0)
    assert first.end_time is not None and second.start_time is not None
    assert first.end_time <= second.start_time, f"backfill runs overlapped: {first.end_time} > {second.start_time}"
    if "reconcile" in present:
        # The run read MEMBERPULSE_DATA_DIR from the worker's environment and left its snapshot there.
        with open_latest(stack.data_dir / "snapshots") as con:
            assert con.execute("SELECT count(*) FROM snapshot_info").fetchone() == (1,)


def test_deployments_run_on_a_worker_outside_the_directory_that_deployed_them(tmp_path: Path) -> None:
    """Deploy from a directory holding only prefect.yaml, then remove it; a worker started elsewhere (the
    project installed, no checkout as its working directory) runs reconcile with the data dir it was given."""
    deployer = tmp_path / "deployer"
    deployer.mkdir()
    shutil.copy(ROOT / "prefect.yaml", deployer / "prefect.yaml")
    worker_dir = tmp_path / "worker-cwd"
    worker_dir.mkdir()
    job_data = tmp_path / "job-variables-data"

    with _prefect_server(tmp_path) as stack:
        _cli(stack, "work-pool", "create", POOL, "--type", "process")
        _cli(stack, "--no-prompt", "deploy", "--name", "reconcile", cwd=deployer)
        shutil.rmtree(deployer)  # nothing may depend on where `prefect deploy` ran
        with _client(stack) as client:
            [deployment] = client.read_deployments()
            recorded = deployment.model_dump_json()
            assert str(deployer) not in recorded and str(ROOT) not in recorded
            assert deployment.pull_steps == []

        stack.env["MEMBERPULSE_DATA_DIR"] = str(tmp_path / "worker-data")  # the worker's own environment
        with _started(stack, "worker", ["worker", "start", "--pool", POOL], worker_dir), _client(stack) as client:
            from_worker_env = client.create_flow_run_from_deployment(deployment.id).id
            from_job_variables = client.create_flow_run_from_deployment(
                deployment.id, job_variables={"env": {"MEMBERPULSE_DATA_DIR": str(job_data)}}
            ).id
            for run_id in (from_worker_env, from_job_variables):
                run = _wait_final(client, run_id, stack, timeout=120)
                assert run.state is not None and run.state.is_completed(), (
                    f"{run.state}\n{_tail(tmp_path / 'worker.log')}"
                )

    for data_dir in (tmp_path / "worker-data", job_data):
        with open_latest(data_dir / "snapshots") as con:
            assert con.execute("SELECT count(*) FROM snapshot_info").fetchone() == (1,)
    assert list(worker_dir.iterdir()) == []  # the runs wrote only where they were told


def test_schedule_it_as_written_reads_the_landings_data_and_never_completes_on_an_empty_dir(tmp_path: Path) -> None:
    """docs/deploy.md's "On one machine" with no MEMBERPULSE_DATA_DIR anywhere: the worker's runs (started in a
    temporary directory) use the same per-user data dir as `serve` and `run`, and say which; a run that would
    read a directory no one writes to fails in its own state instead of saying Completed."""
    from tests.support.reconcile_testkit import append_raw, scenario

    xdg = tmp_path / "xdg-data"
    default_dir = xdg / "memberpulse"
    append_raw(default_dir, scenario())  # what `memberpulse serve` stored, under its default data dir
    dotenv = tmp_path / "worker.env"
    dotenv.write_text(f"MEMBERPULSE_DATA_DIR={tmp_path / 'from-env-file'}\n")
    append_raw(tmp_path / "from-env-file", scenario()[:2])
    worker_dir = tmp_path / "worker-cwd"
    worker_dir.mkdir()

    with _prefect_server(tmp_path) as stack:
        del stack.env["MEMBERPULSE_DATA_DIR"]
        stack.env["XDG_DATA_HOME"] = str(xdg)
        _cli(stack, "work-pool", "create", POOL, "--type", "process")
        _cli(stack, "--no-prompt", "deploy", "--name", "reconcile")
        with _started(stack, "worker", ["worker", "start", "--pool", POOL], worker_dir), _client(stack) as client:
            [deployment] = client.read_deployments()

            def run(env: dict[str, str]) -> tuple[FlowRun, UUID]:
                run_id = client.create_flow_run_from_deployment(deployment.id, job_variables={"env": env}).id
                return _wait_final(client, run_id, stack, timeout=120), run_id

            default_run, default_id = run({})
            relative_run, relative_id = run({"MEMBERPULSE_DATA_DIR": "data"})
            unused_run, unused_id = run(
                {"MEMBERPULSE_DATA_DIR": str(tmp_path / "nobody-writes-here"), "WHOP_WEBHOOK_SECRET": "ws_x"}
            )
            env_file_run, _ = run({"MEMBERPULSE_ENV_FILE": str(dotenv)})
            said = _wait_for_log(client, [default_id], f"data dir: {default_dir}", timeout=30)
            relative_said = _wait_for_log(client, [relative_id], "is relative", timeout=30)
            unused_said = _wait_for_log(client, [unused_id], "has never received a webhook", timeout=30)

    worker_log = _tail(tmp_path / "worker.log")
    assert default_run.state is not None and default_run.state.is_completed(), f"{default_run.state}\n{worker_log}"
    assert said, "the run logs the absolute data dir it used"
    with open_latest(default_dir / "snapshots") as con:
        assert con.execute("SELECT count(*) FROM member_activity").fetchone() == (4,)
    assert relative_run.state is not None and relative_run.state.is_failed(), relative_run.state
    assert unused_run.state is not None and unused_run.state.is_failed(), unused_run.state
    assert relative_said and unused_said
    assert not (tmp_path / "nobody-writes-here" / "snapshots").exists()
    assert env_file_run.state is not None and env_file_run.state.is_completed(), env_file_run.state
    with open_latest(tmp_path / "from-env-file" / "snapshots") as con:
        assert con.execute("SELECT count(*) FROM member_activity").fetchone() == (1,)
    assert list(worker_dir.iterdir()) == []
