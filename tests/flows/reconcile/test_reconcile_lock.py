"""Two runs at once: the second is a transient condition (exit 3, try again), not a configuration error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from memberpulse.cli import main
from tests.support.reconcile_testkit import append_raw, scenario

HOLD_LOCK = """
import fcntl, sys, time
fh = open(sys.argv[1], "w")
fcntl.flock(fh, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_run_while_another_holds_the_lock_exits_3_and_the_next_one_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEMBERPULSE_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no stray .env
    append_raw(tmp_path, scenario())
    (tmp_path / "warehouse").mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "warehouse" / ".reconcile.lock")], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        assert main(["run"]) == 3
        assert "another reconcile run holds the lock" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert main(["run"]) == 0
