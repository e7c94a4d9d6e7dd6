"""A flood of forged requests against a real ``memberpulse serve`` must not blind the failure log: a delivery
signed with a rotated-out secret, refused after the quarantine reached its cap, still reaches the quarantine
and, through a real ``memberpulse run``, ``webhook_failures`` in the snapshot — after a restart too.

Before rotation, a full quarantine only counted refusals (in memory, per process) and stayed full across
restarts, so from then on no refusal reached ``webhook_failures``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import httpx
import pytest

from memberpulse.contracts.quarantine import FIRST_OF_EACH_REASON
from memberpulse.landing import mock_events as mock
from memberpulse.landing.quarantine import ALLOWANCE_BYTES
from tests.support.landing_process import LandingProcess, landing_process

pytestmark = pytest.mark.slow

CAP = 64 * 1024
ROTATED_OUT = "ws_rotated_out_0d9a6c1e4b7f"  # the secret Whop still signs with; the landing no longer has it
FORGER = "ws_forger_5e2c8b0a7d13"
ROTATED_FILES = "*-[0-9][0-9][0-9][0-9][0-9][0-9].ndjson"  # <writer>-<seq>.ndjson
REASON = "landing 403: no matching signature found"  # forged and rotated-out deliveries alike


def _refused(landing: LandingProcess, *, secret: str, webhook_id: str, padding: int = 0) -> None:
    payload = mock.mock_event("membership.went_valid", mock.MockMember(membership_id="mem_q"))
    payload["padding"] = "p" * padding
    body, headers = mock.signed_delivery(payload, secret=secret, webhook_id=webhook_id)
    assert httpx.post(landing.url, content=body, headers=headers, timeout=10).status_code == 403


def _flood(landing: LandingProcess, tag: str) -> None:
    """Twice the cap in forged deliveries (each entry keeps a 4 KiB body prefix)."""
    for n in range(2 * CAP // 4096):
        _refused(landing, secret=FORGER, webhook_id=f"msg_forged_{tag}_{n}", padding=4096)


def _entries(data_dir: Path, pattern: str = "*.ndjson") -> dict[str, dict[str, object]]:
    """Quarantine entries by webhook id."""
    lines = [line for p in (data_dir / "quarantine").glob(pattern) for line in p.read_bytes().splitlines()]
    return {entry["headers"]["webhook-id"]: entry for entry in map(json.loads, lines)}


def _sizes(data_dir: Path) -> tuple[int, int]:
    """(bytes in rotated entry files, bytes in the whole quarantine directory)."""
    files = [p for p in (data_dir / "quarantine").iterdir() if p.is_file()]
    rotated = sum(p.stat().st_size for p in files if p.match(ROTATED_FILES))
    return rotated, sum(p.stat().st_size for p in files)


def _run_and_read_failures(data_dir: Path) -> set[tuple[str, str]]:
    env = {**os.environ, "MEMBERPULSE_DATA_DIR": str(data_dir), "PREFECT_HOME": str(data_dir / "prefect")}
    for name in ("PREFECT_API_URL", "SUPABASE_DB_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"):
        env.pop(name, None)
    run = subprocess.run(
        [sys.executable, "-m", "memberpulse", "run"], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    with duckdb.connect(str(data_dir / "snapshots" / "latest.duckdb"), read_only=True) as con:
        return set(con.execute("SELECT webhook_id, reason FROM webhook_failures").fetchall())


def test_a_refusal_after_a_flood_filled_the_cap_is_recorded_across_restarts(tmp_path: Path) -> None:
    env = {"MEMBERPULSE_QUARANTINE_MAX_BYTES": str(CAP)}
    with landing_process(tmp_path, **env) as landing:
        _flood(landing, "a")
        _refused(landing, secret=ROTATED_OUT, webhook_id="msg_rotated_out_1")
    assert "msg_rotated_out_1" in _entries(tmp_path)
    assert ("msg_rotated_out_1", REASON) in _run_and_read_failures(tmp_path)

    with landing_process(tmp_path, log_name="serve-2.log", **env) as landing:  # a restart: the cap still reached
        _flood(landing, "b")
        _refused(landing, secret=ROTATED_OUT, webhook_id="msg_rotated_out_2")
        metrics = httpx.get(f"http://127.0.0.1:{landing.port}/metrics", timeout=10).text
    entries = _entries(tmp_path)
    assert "msg_rotated_out_2" in entries
    assert {("msg_rotated_out_1", REASON), ("msg_rotated_out_2", REASON)} <= _run_and_read_failures(tmp_path)

    sent = 2 * (2 * CAP // 4096 + 1)  # every refusal, both processes, all with the same reason
    assert entries["msg_rotated_out_2"]["reason_count"] == sent  # counted across the restart
    assert f'reason="403 no matching signature found"}} {sent // 2}' in metrics  # this process's own
    # The very first refusal was rotated out long ago, but as the first of its reason it stays, outside the cap.
    assert "msg_forged_a_0" not in _entries(tmp_path, ROTATED_FILES)
    assert list(_entries(tmp_path, FIRST_OF_EACH_REASON)) == ["msg_forged_a_0"]
    rotated, everything = _sizes(tmp_path)
    assert CAP - 2 * CAP // 8 < rotated <= CAP and everything <= CAP + ALLOWANCE_BYTES
    manifest = json.loads((tmp_path / "warehouse" / "reconcile" / "manifest.json").read_text())
    assert all((tmp_path / "quarantine" / name).exists() for name in manifest["quarantine_offsets"])
