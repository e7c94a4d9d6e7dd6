"""The backfill against an API that misbehaves (the Whop API simulator on 127.0.0.1 with faults, read through the
real whop-sdk): cursors that never end or cycle are stopped with exit 3 naming the resource and the cursor, and
a SIGKILLed ``memberpulse backfill`` leaves no process behind (it starts no Prefect server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memberpulse.errors import ExitCode, WhopGaveUp
from memberpulse.flows.whop import WhopBackfillClient, latest_snapshot
from memberpulse.settings import Settings
from tests.support.processes import processes_carrying
from tests.support.whop_testkit import COMPANY_ID, PAGE_SIZE, Simulator, make_settings

pytestmark = pytest.mark.slow


def test_a_cursor_that_never_ends_stops_at_the_page_bound_naming_resource_and_cursor(
    simulator: Simulator, tmp_path: Path
) -> None:
    simulator.faults.endless_cursor("memberships")
    settings = make_settings(tmp_path / "data", simulator.base_url, MEMBERPULSE_WHOP_MAX_PAGES=25)
    with WhopBackfillClient.from_settings(settings) as client, pytest.raises(WhopGaveUp) as gave_up:
        for _ in client.pages("memberships"):
            pass
    message = str(gave_up.value)
    assert "memberships" in message and COMPANY_ID in message and "after 25 pages" in message
    assert "cursor '" in message and "MEMBERPULSE_WHOP_MAX_PAGES" in message
    assert gave_up.value.exit_code == ExitCode.TRANSIENT
    assert len(simulator.state.served("memberships")) == 25


def test_a_cursor_that_cycles_is_stopped_when_it_comes_back(simulator: Simulator, settings: Settings) -> None:
    simulator.faults.cycling_cursor("members")  # A → B → A
    with WhopBackfillClient.from_settings(settings) as client, pytest.raises(WhopGaveUp) as gave_up:
        for _ in client.pages("members"):
            pass
    assert "members" in str(gave_up.value) and "handed out again (first by page 1): it cycles" in str(gave_up.value)
    assert len(simulator.state.served("members")) == 3


def _cli_env(data: Path, base_url: str, **extra: str) -> dict[str, str]:
    keep = ("WHOP_", "NEXT_PUBLIC_WHOP", "MEMBERPULSE_", "PREFECT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(keep)}
    return {
        **env, "WHOP_API_KEY": "sim_backfill_test_key", "WHOP_COMPANY_ID": COMPANY_ID, "WHOP_API_BASE_URL": base_url,
        "MEMBERPULSE_DATA_DIR": str(data), "MEMBERPULSE_WHOP_PAGE_SIZE": str(PAGE_SIZE),
        "PREFECT_HOME": str(data.parent / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra,
    }  # fmt: skip


def _memberpulse() -> str:
    return str(Path(sys.executable).with_name("memberpulse"))


def test_cli_backfill_with_an_endless_cursor_exits_3_with_one_line_and_writes_nothing(
    simulator: Simulator, tmp_path: Path
) -> None:
    simulator.faults.endless_cursor("members")
    data = tmp_path / "data"
    env = _cli_env(data, simulator.base_url, MEMBERPULSE_WHOP_MAX_PAGES="40")
    done = subprocess.run([_memberpulse(), "backfill"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=180, check=False)  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert "members" in lines[0] and "cursor '" in lines[0] and "after 40 pages" in lines[0]
    assert lines[1:] == ["memberpulse backfill: no snapshot written"] and "Traceback" not in done.stderr
    assert latest_snapshot(data / "warehouse") is None


def test_a_sigkilled_cli_backfill_leaves_no_process_behind(simulator: Simulator, tmp_path: Path) -> None:
    """Killed while both fetches wait on Whop (their first pages answer after 60 s). Before, the backfill ran as
    a Prefect flow and Prefect's temporary API server (218 MB) outlived the killed command."""
    simulator.faults.slow(60, 2)  # the first page of each resource; the rule is gone once both arrived
    data = tmp_path / "data"
    env = _cli_env(data, simulator.base_url, MEMBERPULSE_WHOP_TIMEOUT_SECONDS="120",
                   PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")  # fmt: skip
    with open(tmp_path / "output.log", "w") as log:  # a file, not a pipe: a survivor would hold a pipe open
        proc = subprocess.Popen([_memberpulse(), "backfill"], env=env, cwd=tmp_path, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 180
            while simulator.faults.rules and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            both_fetching = not simulator.faults.rules
            proc.send_signal(signal.SIGKILL)
            returncode = proc.wait(timeout=30)
        finally:
            proc.kill()
    time.sleep(1.0)
    left = processes_carrying(str(data))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert both_fetching and returncode == -signal.SIGKILL, (tmp_path / "output.log").read_text()
    assert left == []
