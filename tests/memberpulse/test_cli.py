"""The ``memberpulse`` CLI as a user runs it (a real subprocess): misconfiguration is one line and exit 2
before any work, ``run`` says which data dir it used, a one-off ``run`` starts no Prefect server (so a
SIGKILLed run leaves nothing behind), and ``send-test``'s mock webhooks never reach the published members."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import psycopg
import pytest

from memberpulse.contracts.events import SUPPORTED_EVENTS
from memberpulse.settings import Settings, env_names
from memberpulse.testing.kill_points import FAULT_ENV
from tests.support.landing_testkit import SECRET, read_records, running_server
from tests.support.landing_testkit import make_settings as make_landing_settings
from tests.support.processes import processes_carrying
from tests.support.reconcile_testkit import append_raw, scenario

pytestmark = pytest.mark.slow
COMMANDS = [["serve"], ["send-test", "all"], ["run"], ["backfill"], ["migrate"], ["demo"]]


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The test process's environment without any memberpulse setting, plus ``settings``."""
    ours = {env for field in Settings.model_fields for env in env_names(field)}
    env = {k: v for k, v in os.environ.items() if k not in ours and not k.startswith("MEMBERPULSE_")}
    return {**env, "MEMBERPULSE_DATA_DIR": str(tmp_path / "data"), **settings}


def _cli(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memberpulse", *args],
        env=_env(tmp_path, **settings),
        cwd=tmp_path,  # no .env file here
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_an_invalid_setting_stops_every_command_with_one_line(command: list[str], tmp_path: Path) -> None:
    done = _cli(tmp_path, *command, MEMBERPULSE_HALF_LIFE_DAYS="abc")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "MEMBERPULSE_HALF_LIFE_DAYS='abc'" in done.stderr
    assert "set MEMBERPULSE_HALF_LIFE_DAYS to a number" in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "data").exists()  # no work started


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"MEMBERPULSE_HALF_LIFE_DAYS": "abc"}, "MEMBERPULSE_HALF_LIFE_DAYS"),
        ({"MEMBERPULSE_ACTIVE_DAYS": "40"}, "MEMBERPULSE_ACTIVE_DAYS (40) is greater than MEMBERPULSE_AT_RISK_DAYS"),
        ({"MEMBERPULSE_LOG_LEVEL": "chatty"}, "MEMBERPULSE_LOG_LEVEL"),
        ({"SUPABASE_URL": "https://p.supabase.co"}, "SUPABASE_SERVICE_ROLE_KEY is not set"),
        ({"SUPABASE_SERVICE_ROLE_KEY": "srk_test"}, "SUPABASE_URL is not set"),
        ({"WHOP_COMPANY_IDS": "biz_test,acme"}, "'acme' is not a Whop company id"),
        ({"WHOP_COMPANY_ID": "biz_test"}, "WHOP_API_KEY is not set"),
    ],
    ids=["not-number", "active-over-at-risk", "log-level", "url-no-key", "key-no-url", "bad-company", "company-only"],
)
def test_misconfigured_run_exits_2_naming_the_variable(settings: dict[str, str], named: str, tmp_path: Path) -> None:
    done = _cli(tmp_path, "run", **settings)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("memberpulse run: ") and done.stderr.count("\n") == 1
    assert named in done.stderr and "Traceback" not in done.stderr
    assert "srk_test" not in done.stderr and "k_test" not in done.stderr
    assert not (tmp_path / "data").exists()


def test_tracebacks_only_at_debug(tmp_path: Path) -> None:
    done = _cli(tmp_path, "run", MEMBERPULSE_LOG_LEVEL="DEBUG", MEMBERPULSE_ACTIVE_DAYS="40")
    assert done.returncode == 2 and "Traceback" in done.stderr and "MEMBERPULSE_ACTIVE_DAYS" in done.stderr


def test_neither_target_nor_backfill_set_runs_and_names_its_data_dir(tmp_path: Path) -> None:
    done = _cli(tmp_path, "run", COLUMNS="200")
    assert done.returncode == 0, done.stderr
    data_dir = str((tmp_path / "data").resolve())
    assert "nowhere" in done.stdout and data_dir in done.stdout
    assert f"warning: {data_dir} has never received a webhook, a backfill or a recovery" in done.stderr
    skipped = _cli(tmp_path, "backfill")
    assert skipped.returncode == 0 and "skipped" in skipped.stdout

    append_raw(tmp_path / "data", scenario())
    again = _cli(tmp_path, "run", COLUMNS="200")
    assert again.returncode == 0 and "warning" not in again.stderr and data_dir in again.stdout


def test_a_one_off_run_does_not_import_prefect(tmp_path: Path) -> None:
    append_raw(tmp_path / "data", scenario())
    probe = "import sys; from memberpulse.cli import main; main(['run']); print('prefect' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("False")


def _killed_run(tmp_path: Path, argv: list[str]) -> list[int]:
    """Run ``argv`` with a kill point armed just before the snapshot swap (every step done); the process
    SIGKILLs itself there, as the OOM killer would. Returns the processes it left behind."""
    data_dir = tmp_path / "data"
    append_raw(data_dir, scenario())
    env = {
        **_env(tmp_path),
        FAULT_ENV: "snapshot_before_swap",
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # a busy machine migrates SQLite slowly
    }
    env.pop("PREFECT_API_URL", None)  # so a Prefect run would start its temporary API server
    # Output to a file, not a pipe: a process left behind would hold a pipe open and hang the wait.
    with open(tmp_path / "output.log", "w") as log:
        proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        try:
            returncode = proc.wait(timeout=240)
        finally:
            proc.kill()
    time.sleep(1.0)
    left = processes_carrying(str(data_dir))
    assert returncode == -signal.SIGKILL, (tmp_path / "output.log").read_text()
    return left


def test_a_sigkilled_run_leaves_no_process_behind(tmp_path: Path) -> None:
    left = _killed_run(tmp_path, [sys.executable, "-m", "memberpulse.testing.kill_points", "run"])
    assert left == []


def test_the_orphan_check_sees_a_prefect_temporary_server(tmp_path: Path) -> None:
    """The check above is not vacuous: the same kill during a Prefect flow run (what ``memberpulse run`` did
    before) leaves Prefect's temporary API server running, and the check finds it."""
    flow_run = (
        "import sys; from memberpulse.testing.kill_points import install; install('snapshot_before_swap');"
        "from memberpulse.flows.reconcile import reconcile_flow; reconcile_flow()"
    )
    try:
        left = _killed_run(tmp_path, [sys.executable, "-c", flow_run])
        assert left, "expected Prefect's temporary server to outlive its SIGKILLed parent"
    finally:
        for pid in processes_carrying(str(tmp_path / "data")):
            os.kill(pid, signal.SIGKILL)


def _members(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as con:
        return [row[0] for row in con.execute("SELECT membership_id FROM member_activity ORDER BY 1")]


def test_send_test_webhooks_are_stored_marked_and_never_published(tmp_path: Path, migrated_postgres_dsn: str) -> None:
    data_dir = tmp_path / "data"
    settings = make_landing_settings(data_dir)
    with running_server(settings) as server:
        sent = _cli(tmp_path, "send-test", "all", "--url", server.url, WHOP_WEBHOOK_SECRET=SECRET)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    records = read_records(settings.landing_dir)
    assert len(records) == len(SUPPORTED_EVENTS)
    assert all(r["webhook_id"].startswith("test_msg_") for r in records)
    assert all(json.loads(r["body"])["data"]["id"] == "test_membership_xxx" for r in records)
    append_raw(data_dir, scenario())  # four real members beside them

    run = _cli(tmp_path, "run", SUPABASE_DB_URL=migrated_postgres_dsn, COLUMNS="200")
    assert run.returncode == 0, run.stderr
    assert re.search(r"test webhooks \(send-test, test_ ids\)\s*│\s*5 \(not scored or published\)", run.stdout)
    assert _members(migrated_postgres_dsn) == ["mem_0001", "mem_0002", "mem_0003", "mem_0004"]
    with duckdb.connect(str(data_dir / "snapshots" / "latest.duckdb"), read_only=True) as snap:
        ids = [row[0] for row in snap.execute("SELECT membership_id FROM member_activity").fetchall()]
    assert sorted(ids) == ["mem_0001", "mem_0002", "mem_0003", "mem_0004"]

    # Whoever wants them: the setting, and a full refresh to read the raw store again.
    included = _cli(
        tmp_path, "run", "--full-refresh", SUPABASE_DB_URL=migrated_postgres_dsn,
        MEMBERPULSE_INCLUDE_TEST_WEBHOOKS="true", COLUMNS="200",
    )  # fmt: skip
    assert included.returncode == 0, included.stderr
    assert "5 (included)" in included.stdout
    assert "test_membership_xxx" in _members(migrated_postgres_dsn)
