"""Errors a person can cause or meet end in one line and the right exit code, never a traceback: an output
file that cannot be written, a damaged snapshot, a data dir that is a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from memberpulse.cli import main
from tests.memberpulse.test_cli_analysts import data_dir, snapshot  # noqa: F401 - fixtures


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("out", ["/proc/nope/r.html", "{missing}/r.html"])
def test_report_to_a_place_that_cannot_be_written_is_exit_2(
    snapshot: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    out: str,
) -> None:
    target = out.format(missing=tmp_path / "missing")
    assert main(["report", "--out", target]) == 2
    captured = capsys.readouterr()
    assert "report written" not in captured.out
    assert f"cannot write {target}" in _one_line(captured.err)


@pytest.mark.parametrize("command", [["sql", "SELECT 1"], ["report"]])
def test_a_damaged_snapshot_is_named_with_its_remedy(
    snapshot: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    real = snapshot.resolve()
    real.chmod(0o644)
    with open(real, "r+b") as fh:  # a disk repair or a copy cut short
        fh.seek(4096)
        fh.write(b"\x00" * 8192)
    assert main(command) == 2
    line = _one_line(capsys.readouterr().err)
    assert "cannot be read" in line and "latest.duckdb" in line and "memberpulse run" in line


@pytest.mark.parametrize("command", [["run"], ["sql", "SELECT 1"], ["report"], ["backfill"]])
def test_a_data_dir_that_is_a_file_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    afile = tmp_path / "data"
    afile.write_text("not a directory")
    monkeypatch.setenv("MEMBERPULSE_DATA_DIR", str(afile))
    assert main(command) == 2
    line = _one_line(capsys.readouterr().err)
    assert "MEMBERPULSE_DATA_DIR" in line and "not a directory" in line and "--full-refresh" not in line
