"""Damaged warehouse files stop ``memberpulse run`` with exit 2 and one line naming the file and the remedy,
never a traceback (the real CLI, in a subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from memberpulse.flows.reconcile import reconcile
from tests.flows.reconcile_testkit import AS_OF, append_raw, make_settings, scenario

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir after one good run (no publish target): manifest, state, published state, run log."""
    root = tmp_path_factory.mktemp("pristine")
    append_raw(root, scenario())
    reconcile(make_settings(root), as_of=AS_OF, full_refresh=False)  # the same steps the CLI runs
    return root


def _run_cli(data_dir: Path, prefect_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEMBERPULSE_DATA_DIR": str(data_dir), "PREFECT_HOME": str(prefect_home)}
    for name in ("PREFECT_API_URL", "SUPABASE_DB_URL", "SUPABASE_URL"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "memberpulse", "run", "--as-of", AS_OF.isoformat(), *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _manifest(data_dir: Path) -> Path:
    return data_dir / "warehouse" / "reconcile" / "manifest.json"


def _state_file(data_dir: Path) -> Path:
    return data_dir / "warehouse" / "reconcile" / json.loads(_manifest(data_dir).read_text())["state_file"]


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    return path


def _write(data: bytes) -> Callable[[Path], Path]:
    def damage(data_dir: Path) -> Path:
        _manifest(data_dir).write_bytes(data)
        return _manifest(data_dir)

    return damage


def _unknown_key(data_dir: Path) -> Path:
    manifest = json.loads(_manifest(data_dir).read_text())
    _manifest(data_dir).write_text(json.dumps({**manifest, "surprise": 1}))
    return _manifest(data_dir)


DAMAGE: dict[str, Callable[[Path], Path]] = {
    "manifest truncated": lambda d: _truncate(_manifest(d)),
    "manifest empty": _write(b""),
    "manifest binary": _write(bytes(range(256))),
    "manifest null": _write(b"null"),
    "manifest unknown key": _unknown_key,
    "state parquet truncated": lambda d: _truncate(_state_file(d)),
    "published parquet truncated": lambda d: _truncate(
        d / "warehouse" / "published" / "member_activity.snapshot-only.parquet"
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_file_exits_2_with_one_line_naming_it(
    case: str, pristine: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(pristine, data_dir)
    damaged = DAMAGE[case](data_dir)

    done = _run_cli(data_dir, tmp_path_factory.getbasetemp() / "prefect-home")

    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in done.stdout, done.stderr[-3000:]
    assert str(damaged) in lines[0] and "damaged" in lines[0]
    remedy = "delete it" if "published" in case else "memberpulse run --full-refresh"
    assert remedy in lines[0]


def test_full_refresh_rebuilds_past_a_damaged_manifest(
    pristine: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(pristine, data_dir)
    _manifest(data_dir).write_bytes(b"null")

    done = _run_cli(data_dir, tmp_path_factory.getbasetemp() / "prefect-home", "--full-refresh")

    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(_manifest(data_dir).read_text())["state_file"]
