"""A full disk at any point of a run is a transient failure said in one line (exit 3), never a traceback, and
loses nothing: once there is space, the next run ends where one uninterrupted run would have.

The data dir is a real tmpfs (root mounts it; CI runs as root) nearly filled by a placeholder file, with a
different amount left free in each case, so the run runs out of space at a different step each time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from memberpulse.landing import mock_events as mock
from tests.support.reconcile_testkit import AS_OF, append_raw, member, raw_record, scenario

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _run(data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEMBERPULSE_DATA_DIR": str(data)}
    return subprocess.run(
        [sys.executable, "-m", "memberpulse", "run", "--json"],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip


def _fill(disk: Path, leave: int) -> Path:
    """A placeholder file taking all but ``leave`` bytes of the disk."""
    stats = os.statvfs(disk)
    filler = disk / "filler"
    size = max(0, stats.f_bavail * stats.f_frsize - leave)
    with open(filler, "wb") as fh:
        fh.truncate(0)
        chunk = b"\0" * (1 << 20)
        while size > 0:
            fh.write(chunk[: min(len(chunk), size)])
            size -= min(len(chunk), size)
    return filler


@pytest.mark.parametrize("leave_kib", [0, 16, 64, 256, 1024])
def test_a_full_disk_is_exit_3_in_one_line_and_the_next_run_loses_nothing(small_disk: Path, leave_kib: int) -> None:
    data = small_disk / "data"
    append_raw(data, scenario())
    assert _run(data).returncode == 0  # a first run: state, history, snapshot exist
    late = [raw_record(mock.went_valid(member(200 + i), created_at=AS_OF)) for i in range(50)]
    append_raw(data, late, writer="late-writer")
    filler = _fill(small_disk, leave_kib * 1024)
    try:
        full = _run(data)
    finally:
        filler.unlink()
    assert "Traceback" not in full.stderr, full.stderr
    assert full.returncode in (0, 3), full.stderr
    if full.returncode == 3:
        [line] = full.stderr.strip().splitlines()
        assert "memberpulse run:" in line and ("space" in line or "disk" in line), line
    again = _run(data)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["members"] == 4 + 50
