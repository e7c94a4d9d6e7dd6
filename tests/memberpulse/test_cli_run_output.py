"""What `memberpulse run` shows: the rows a dry run would send, a JSON report for programs, no truncated path
or "None", quiet at WARNING, a changed fold setting said, Ctrl-C said in one line with exit 130."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memberpulse.cli import build_parser, main, version
from memberpulse.landing import mock_events as mock
from memberpulse.testing.kill_points import FAULT_ENV, SIGNAL_ENV
from tests.support.reconcile_testkit import AS_OF, append_raw, member, raw_record, scenario


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "a [bold]data[/bold] dir with a long name that a table cell would cut" / "data"
    monkeypatch.setenv("MEMBERPULSE_DATA_DIR", str(data))
    monkeypatch.delenv("MEMBERPULSE_LOG_LEVEL", raising=False)
    monkeypatch.chdir(tmp_path)
    append_raw(data, scenario())
    return data


def test_a_dry_run_lists_the_rows_it_would_send(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--as-of", AS_OF.isoformat(), "--dry-run", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "Rows it would insert or update (4)" in out
    assert out.count("insert") >= 2 and "mem_0001" in out and "mem_0004" not in out
    assert "… and 2 more" in out

    assert main(["run", "--as-of", AS_OF.isoformat(), "--dry-run", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))  # stdout is the rows alone; the summary went to stderr
    assert [r["membership_id"] for r in rows] == ["mem_0001", "mem_0002", "mem_0003", "mem_0004"]
    assert {r["action"] for r in rows} == {"insert"} and "rows it would insert" in err

    assert main(["run", "--as-of", AS_OF.isoformat()]) == 0
    append_raw(data_dir, [raw_record(mock.accessed(member(2), accessed_at=AS_OF))], writer="w2")
    capsys.readouterr()
    assert main(["run", "--as-of", AS_OF.isoformat(), "--dry-run", "--format", "json"]) == 0
    changes = json.loads(capsys.readouterr().out)
    assert [(c["action"], c["membership_id"]) for c in changes] == [("update", "mem_0002")]


def test_paths_are_printed_whole_and_never_as_none(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--as-of", AS_OF.isoformat(), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"data dir: {data_dir}" in out  # whole, markup-looking text and all
    assert "None" not in out and "analyst report: none written (dry run)" in out
    assert main(["run", "--as-of", AS_OF.isoformat()]) == 0
    out = capsys.readouterr().out
    assert f"snapshot: {data_dir / 'snapshots'}" in out
    assert f"analyst report: {data_dir / 'snapshots' / 'report.html'}" in out


def test_json_report_and_a_quiet_log_level(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--as-of", AS_OF.isoformat(), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "completed" and report["members"] == 4 and report["data_dir"] == str(data_dir)
    assert report["members_by_status"] and report["warnings"] == []

    monkeypatch.setenv("MEMBERPULSE_LOG_LEVEL", "WARNING")
    assert main(["run"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert main(["run", "--dry-run", "--json", "--format", "csv"]) == 2  # both want stdout


def test_a_changed_fold_setting_says_a_full_refresh_applies_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("MEMBERPULSE_INCLUDE_TEST_WEBHOOKS", "true")
    assert main(["run", "--json"]) == 0
    [warning] = json.loads(capsys.readouterr().out)["warnings"]
    assert "MEMBERPULSE_INCLUDE_TEST_WEBHOOKS false → true" in warning and "--full-refresh" in warning
    assert main(["run", "--full-refresh", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []
    assert main(["run", "--json"]) == 0  # the state is now built under the new value
    assert json.loads(capsys.readouterr().out)["warnings"] == []


def test_version_and_every_option_has_help_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"memberpulse {version()}"
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'version = "{version()}"' in pyproject
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    for name, sub in subparsers.choices.items():
        text = sub.format_help()
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings[0]} has no description"
                if action.default not in (None, False):
                    assert f"(default: {action.default})" in " ".join(text.split()), (name, action.dest)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "committed"), [("ingest_before_commit", False), ("after_ingest", True), ("snapshot_before_swap", True)]
)
def test_ctrl_c_says_what_was_committed_and_exits_130(tmp_path: Path, point: str, committed: bool) -> None:
    data = tmp_path / "data"
    append_raw(data, scenario())
    env = {**os.environ, "MEMBERPULSE_DATA_DIR": str(data), FAULT_ENV: point, SIGNAL_ENV: "SIGINT"}
    done = subprocess.run(
        [sys.executable, "-m", "memberpulse.testing.kill_points", "run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 130, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    said = "this run's ingest was committed (as of" if committed else "nothing of this run was committed"
    assert lines[0].startswith(f"memberpulse run: interrupted: {said}"), lines
    env.pop(FAULT_ENV)
    again = subprocess.run(
        [sys.executable, "-m", "memberpulse", "run", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["members"] == 4
