"""``memberpulse demo`` end to end: it runs, the simulated Whop's deliveries during the landing outage fail, the
backfill's recovery step brings every one of them back, one of the three companies uninstalls the app in the
middle of the backfill and fails alone, and nothing is left running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_recovers_every_webhook_lost_in_the_outage(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHOP_", "MEMBERPULSE_", "SUPABASE_"))}
    done = subprocess.run(
        [sys.executable, "-m", "memberpulse", "demo"],
        env={**env, "MEMBERPULSE_DATA_DIR": str(tmp_path), "COLUMNS": "200"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = " ".join(done.stdout.split())
    assert "deliveries failed (connection refused)" in out
    assert "all of them are in the events table, recovered from Whop's delivery log" in out
    assert "memberpulse backfill: read" in out and "recovered" in out
    # Three companies; one uninstalls the app mid-backfill and fails alone (a 403, named), the others are written.
    assert "backfill: 3 company(ies): biz_memberpulse_demo, biz_demo_north, biz_demo_south" in out
    assert "biz_demo_south uninstalled the app in the middle of the backfill" in out
    assert "wrote 2 snapshots" in out and "biz_demo_south (uninstalled mid-run)" in out
    err = " ".join(done.stderr.split())
    assert "1 company(ies) not backfilled" in err and "biz_demo_south" in err and "(403)" in err
