"""The backfill Prefect flow (in Prefect's test harness) and ``memberpulse backfill`` (in-process and as a
real subprocess), against the Whop API simulator on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from prefect.states import Failed

from memberpulse.cli.backfill import LineProgress, run_once
from memberpulse.errors import StorageUnavailable, WhopAuthError, WhopGaveUp, WhopUnavailable
from memberpulse.flows.backfill import CompaniesFailed, backfill_company, backfill_flow, reporting
from memberpulse.flows.whop import backfill_dir, latest_snapshot, list_snapshots
from memberpulse.settings import Settings
from tests.support.whop_testkit import COMPANY_ID, PAGE_SIZE, POPULATION_SIZE, Simulator, make_settings

# slow: Prefect's test harness, the simulator server and CLI processes
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
PAGES = -(-POPULATION_SIZE // PAGE_SIZE)


def test_flow_writes_one_snapshot_per_run_and_sees_simulator_mutations(
    simulator: Simulator, settings: Settings
) -> None:
    first = backfill_flow(settings)

    assert first.status == "written" and first.snapshot is not None
    assert {r: (v.pages, v.records) for r, v in first.resources.items()} == {
        "memberships": (PAGES, POPULATION_SIZE),
        "members": (PAGES, POPULATION_SIZE),
    }
    assert latest_snapshot(settings.warehouse_dir) == first.snapshot
    assert first.snapshot.read_memberships()["membership_id"].to_list() == [
        m.id for m in simulator.population.memberships
    ]
    assert first.snapshot.read_members().height == POPULATION_SIZE

    # The demo flips statuses between backfills to create drift; the next snapshot must show it.
    target = next(m for m in simulator.population.memberships if m.status == "active")
    simulator.population.set_status(target.id, "canceled", at=datetime(2026, 11, 27, 12, 5, tzinfo=UTC))
    second = backfill_flow(settings).snapshot
    assert second is not None and second.fetched_at > first.snapshot.fetched_at
    assert latest_snapshot(settings.warehouse_dir) == second
    status = second.read_memberships().filter(pl.col("membership_id") == target.id)["status"].item()
    assert status == "canceled"
    assert [s.path for s in list_snapshots(settings.warehouse_dir)] == [first.snapshot.path, second.path]


def test_flow_that_gives_up_midway_keeps_the_previous_snapshot(simulator: Simulator, settings: Settings) -> None:
    previous = backfill_flow(settings).snapshot
    assert previous is not None
    simulator.faults.server_error(None, status=502, endpoint="memberships", after=3)

    with pytest.raises(CompaniesFailed) as caught:
        backfill_flow(settings)

    assert f"{COMPANY_ID}: gave up fetching Whop memberships for company {COMPANY_ID} at page 4" in str(caught.value)
    assert "last status 502" in str(caught.value)
    assert latest_snapshot(settings.warehouse_dir) == previous
    assert [p.name for p in (backfill_dir(settings.warehouse_dir) / COMPANY_ID).iterdir()] == [previous.path.name]


def test_tasks_retry_only_transient_errors() -> None:
    for fetch in (backfill_company,):
        assert fetch.retries >= 1 and fetch.retry_condition_fn is not None
        assert fetch.retry_jitter_factor
        condition = fetch.retry_condition_fn
        assert condition(fetch, None, Failed(data=StorageUnavailable("disk full"))) is True  # type: ignore[arg-type]
        assert condition(fetch, None, Failed(data=WhopUnavailable("5xx"))) is True  # type: ignore[arg-type]
        gave_up = WhopGaveUp("gave up", company_id=COMPANY_ID, page=2, last_status=500)
        assert condition(fetch, None, Failed(data=gave_up)) is False  # type: ignore[arg-type]
        assert condition(fetch, None, Failed(data=WhopAuthError("401"))) is False  # type: ignore[arg-type]


def test_run_once_plain_lines_and_exit_codes(
    simulator: Simulator,
    settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run_once(settings) == 0
    out = capsys.readouterr().out
    assert f"backfill memberships: done, {PAGES} pages, {POPULATION_SIZE} records" in out
    assert f"backfill members: done, {PAGES} pages, {POPULATION_SIZE} records" in out
    assert "wrote" in out and str(backfill_dir(settings.warehouse_dir)) in out

    bad_key = make_settings(settings.data_dir, simulator.base_url, WHOP_API_KEY="not-the-key")
    assert run_once(bad_key) == 2
    err = capsys.readouterr().err
    assert "WHOP_API_KEY" in err and "not-the-key" not in err and "the latest is still" in err

    simulator.faults.rate_limit(None, retry_after=0.3)
    limited = make_settings(settings.data_dir, simulator.base_url, MEMBERPULSE_WHOP_MAX_RATE_LIMIT_WAIT_SECONDS=1)
    assert run_once(limited) == 3
    assert "gave up" in capsys.readouterr().err
    assert len(list_snapshots(settings.warehouse_dir)) == 1

    for variable in ("WHOP_API_KEY", "WHOP_COMPANY_ID", "NEXT_PUBLIC_WHOP_COMPANY_ID"):
        monkeypatch.delenv(variable, raising=False)
    unconfigured = make_settings(tmp_path / "other", simulator.base_url, WHOP_API_KEY=None, WHOP_COMPANY_ID=None)
    assert run_once(unconfigured) == 0
    assert "backfill skipped" in capsys.readouterr().out
    assert not (tmp_path / "other").exists()


def test_retry_progress_is_reported(simulator: Simulator, settings: Settings) -> None:
    lines: list[str] = []

    class Capture(LineProgress):
        def _print(self, line: str) -> None:
            lines.append(line)

    simulator.faults.rate_limit(2, retry_after=0.1, endpoint="members")
    with reporting(Capture(every=0)):
        backfill_flow(settings)
    assert sum("rate limited, retrying in 0.1 s" in line for line in lines) == 2
    assert any(line.startswith("backfill members: page 1,") for line in lines)


def _cli_env(settings_dir: Path, base_url: str, prefect_api_url: str | None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WHOP_", "NEXT_PUBLIC_WHOP", "MEMBERPULSE_", "PREFECT_"))
    }
    env.update(
        WHOP_API_KEY="sim_backfill_test_key",
        WHOP_COMPANY_ID=COMPANY_ID,
        WHOP_API_BASE_URL=base_url,
        MEMBERPULSE_DATA_DIR=str(settings_dir),
        MEMBERPULSE_WHOP_PAGE_SIZE=str(PAGE_SIZE),
        MEMBERPULSE_WHOP_BACKOFF_BASE_SECONDS="0.05",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    if prefect_api_url:
        env["PREFECT_API_URL"] = prefect_api_url
    env.update(extra)
    return env


def _memberpulse(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("memberpulse")
    return subprocess.run(
        [str(cli), "backfill"], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_backfill(simulator: Simulator, tmp_path: Path, prefect_harness: str) -> None:
    """``memberpulse backfill`` as a real process, output to a pipe. It talks to the harness's Prefect API to
    keep the suite fast; the benchmark runs the same command in ephemeral mode (no Prefect server at all)."""
    data = tmp_path / "data"
    done = _memberpulse(_cli_env(data, simulator.base_url, prefect_harness), tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"backfill memberships: done, {PAGES} pages, {POPULATION_SIZE} records" in done.stdout
    assert "Traceback" not in done.stderr
    snapshot = latest_snapshot(data / "warehouse")
    assert snapshot is not None and snapshot.counts == {
        "memberships": POPULATION_SIZE,
        "members": POPULATION_SIZE,
    }


def test_cli_backfill_bad_credentials(simulator: Simulator, tmp_path: Path, prefect_harness: str) -> None:
    data = tmp_path / "data"
    env = _cli_env(data, simulator.base_url, prefect_harness, WHOP_API_KEY="sk_wrong_key_123")
    refused = _memberpulse(env, tmp_path)
    assert refused.returncode == 2
    assert "401" in refused.stderr and "WHOP_API_KEY" in refused.stderr
    assert "sk_wrong_key_123" not in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert latest_snapshot(data / "warehouse") is None


def test_output_never_shows_credentials_in_the_base_url(tmp_path: Path) -> None:
    from memberpulse.cli.backfill import _safe_url

    with_userinfo = make_settings(tmp_path, "https://user:s3cret@whop.example:8443/api/v1")
    assert _safe_url(with_userinfo) == "https://whop.example:8443/api/v1"
    plain = make_settings(tmp_path, "https://api.whop.com/api/v1")
    assert _safe_url(plain) == "https://api.whop.com/api/v1"
