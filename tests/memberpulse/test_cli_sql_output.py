"""``memberpulse sql`` prints query results as data: hostile member names (rich markup, emoji codes, control
characters, NUL, bidi controls, 10 kB) come out verbatim through ``--format csv|json`` on standard output and
visibly escaped, never interpreted, in the table view; a reader that stops early (``| head``) ends it quietly.

The snapshot is written with ``write_snapshot``, like ``test_cli_analysts.py``; names go in as a signed webhook
could carry them (the snapshot writer does not clean them).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from memberpulse.cli import main
from memberpulse.flows.publish import PipelineRun
from memberpulse.flows.snapshot import latest_path, write_snapshot
from memberpulse.settings import Settings, env_names

RUN_AT = datetime(2026, 11, 18, 12, tzinfo=UTC)
TS = pl.Datetime("us", "UTC")
# 10,000 characters with no space (so the table's fold is the only break) and markup and emoji codes inside.
LONG = "".join(f"{i:04d}[b]:x:" for i in range(1000))
HOSTILE: dict[str, str] = {
    "mem_admin": "[admin] Alice",
    "mem_colons": "user:x:1",
    "mem_emoji": ":smile:",
    "mem_bold": "[bold]x[/bold]",
    "mem_close": "evil[/x]name",
    "mem_ansi": "\x1b[31mred\x1b[0m\x1b]0;title\x07",
    "mem_nul": "nul\x00byte",
    "mem_c0": "bell\x07back\x08cr\rlf\ntab\tdel\x7f",
    "mem_c1": "nel\x85csi\x9b31m",
    "mem_bidi": "\u202eevil\u202c \u2067iso\u2069 \u200fmark",
    "mem_seps": "line\u2028para\u2029end",
    "mem_backslash": "C:\\x00 is text",
    "mem_wide": "Zoë 😀 漢字",
    "mem_long": LONG,
}
BIDI_CONTROLS = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
BY_ID = "SELECT membership_id, member_name FROM member_activity ORDER BY membership_id"
SHORT_ONES = "SELECT membership_id, member_name FROM member_activity WHERE membership_id <> 'mem_long' ORDER BY 1"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEMBERPULSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "160")
    return tmp_path


def _write(data_dir: Path, names: dict[str, str]) -> Path:
    n = len(names)
    members = pl.DataFrame(
        {
            "membership_id": list(names),
            "company_id": ["biz"] * n,
            "user_id": [f"u{i}" for i in range(n)],
            "member_name": list(names.values()),
            "email": [f"m{i}@example.com" for i in range(n)],
            "status": ["active"] * n,
            "engagement_score": [50] * n,
            "last_active": [RUN_AT] * n,
            "joined_at": [RUN_AT] * n,
            "total_sessions": [1] * n,
            "membership_status": ["active"] * n,
            "valid": [True] * n,
            "updated_at": [RUN_AT] * n,
        },
        schema_overrides={"last_active": TS, "joined_at": TS, "updated_at": TS},
    )
    run = PipelineRun(run_id="sql-test", flow="reconcile", started_at=RUN_AT, status="completed", finished_at=RUN_AT)
    write_snapshot(
        data_dir / "snapshots",
        run_id="sql-test",
        run_at=RUN_AT,
        member_activity=members,
        drift=pl.DataFrame(schema={"membership_id": pl.Utf8, "reason": pl.Utf8}),
        pipeline_runs=pl.DataFrame([run.as_row()]),
        keep=2,
    )
    return latest_path(data_dir / "snapshots")


@pytest.fixture
def hostile(data_dir: Path) -> Path:
    return _write(data_dir, HOSTILE)


def _table_cells(out: str) -> list[list[str]]:
    """The body rows of a printed table, each line split into its cells (borders and padding removed)."""
    body = out.split("┡", 1)[1].splitlines()[1:]  # after the rule under the header
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in body if line.startswith("│")]


def test_csv_on_stdout_is_every_value_verbatim(hostile: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["sql", BY_ID, "--format", "csv"]) == 0
    out = capsysbinary.readouterr().out
    rows = list(csv.reader(io.StringIO(out.decode("utf-8"), newline="")))
    assert rows[0] == ["membership_id", "member_name"]
    assert dict(rows[1:]) == HOSTILE  # each row is [membership_id, member_name]


def test_json_on_stdout_is_every_value_verbatim(hostile: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["sql", BY_ID, "--format", "json"]) == 0
    rows = json.loads(capsysbinary.readouterr().out.decode("utf-8"))
    assert {row["membership_id"]: row["member_name"] for row in rows} == HOSTILE


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_stdout_is_exactly_duckdbs_copy_output(
    hostile: Path, tmp_path: Path, fmt: str, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    # The same bytes as the --out file, which DuckDB's COPY writes: no re-encoding, no row limit.
    sql = "SELECT range AS n, 'r' || range AS label FROM range(2500) ORDER BY n"
    out = tmp_path / f"all.{fmt}"
    assert main(["sql", sql, "--format", fmt, "--out", str(out)]) == 0
    capsysbinary.readouterr()
    assert main(["sql", sql, "--format", fmt]) == 0
    printed = capsysbinary.readouterr().out
    assert printed == out.read_bytes()
    assert printed.count(b'"r2499"' if fmt == "json" else b"2499,r2499\n") == 1  # past the table's 1000 rows


def test_table_shows_markup_and_emoji_codes_literally(hostile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", SHORT_ONES]) == 0
    cells = dict((row[0], row[1]) for row in _table_cells(capsys.readouterr().out) if len(row) == 2)
    for key in ("mem_admin", "mem_colons", "mem_emoji", "mem_bold", "mem_close"):
        assert cells[key] == HOSTILE[key]
    assert cells["mem_wide"] == "Zoë 😀 漢字"  # printable text, emoji included, is left alone


def test_table_escapes_controls_and_bidi_marks(hostile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", SHORT_ONES]) == 0
    out = capsys.readouterr().out
    # Nothing in the output can drive the terminal or reorder the line: only the table's own newlines remain.
    assert [c for c in out if unicodedata.category(c) in ("Cc", "Zl", "Zp") and c != "\n"] == []
    assert BIDI_CONTROLS.isdisjoint(out)
    cells = dict((row[0], row[1]) for row in _table_cells(out) if len(row) == 2)
    assert cells["mem_ansi"] == r"\x1b[31mred\x1b[0m\x1b]0;title\x07"
    assert cells["mem_nul"] == r"nul\x00byte"
    assert cells["mem_c0"] == r"bell\x07back\x08cr\rlf\ntab\tdel\x7f"
    assert cells["mem_c1"] == r"nel\x85csi\x9b31m"
    assert cells["mem_bidi"] == r"\u202eevil\u202c \u2067iso\u2069 \u200fmark"
    assert cells["mem_seps"] == r"line\u2028para\u2029end"
    assert cells["mem_backslash"] == r"C:\\x00 is text"  # a literal backslash doubled: never read as an escape


def test_table_shows_a_10kb_value_whole(hostile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "SELECT member_name FROM member_activity WHERE membership_id = 'mem_long'"]) == 0
    out = capsys.readouterr().out
    assert "".join(cell for row in _table_cells(out) for cell in row) == LONG  # folded over lines, nothing cut


def test_table_column_names_are_data_too(hostile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", 'SELECT 1 AS "[bold]x[/bold]", 2 AS ":smile:", 3 AS "a\x1b[2Jb"']) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("┃"))
    assert [cell.strip() for cell in header.split("┃")[1:-1]] == ["[bold]x[/bold]", ":smile:", r"a\x1b[2Jb"]


def test_a_table_wider_than_the_terminal_loses_no_value(
    hostile: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Twelve columns in 40 terminal columns: rich alone would squeeze some to nothing.
    monkeypatch.setenv("COLUMNS", "40")
    assert main(["sql", "SELECT " + ", ".join(f"'value_{i:02d}' AS column_{i:02d}" for i in range(12))]) == 0
    cells = [cell for row in _table_cells(capsys.readouterr().out) for cell in row]
    assert cells == [f"value_{i:02d}" for i in range(12)]


def test_explain_keeps_its_plan_on_lines_and_literals_verbatim(
    hostile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sql", "EXPLAIN SELECT member_name || '[bold]x[/bold]' FROM member_activity"]) == 0
    out = capsys.readouterr().out
    assert "'[bold]x[/bold]'" in out  # the plan quotes the query's literal; it is text, not markup
    assert r"\n" not in out and len(out.splitlines()) > 6  # the plan's lines stay lines


class _ClosedPipe(io.RawIOBase):
    """A standard output whose reader has gone: every write fails as a closed pipe does."""

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_a_closed_stdout_ends_quietly_with_141(
    hostile: Path, fmt: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = io.TextIOWrapper(io.BufferedWriter(_ClosedPipe()), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", closed)
    assert main(["sql", BY_ID, "--format", fmt]) == 141  # 128 + SIGPIPE, as a shell reports `cat | head`
    assert capsys.readouterr().err == ""


def _env(data_dir: Path) -> dict[str, str]:
    """This process's environment without any memberpulse setting, plus the data dir."""
    ours = {env for field in Settings.model_fields for env in env_names(field)}
    env = {k: v for k, v in os.environ.items() if k not in ours and not k.startswith("MEMBERPULSE_")}
    return {**env, "MEMBERPULSE_DATA_DIR": str(data_dir)}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_a_reader_that_stops_early_ends_it_quietly(hostile: Path, data_dir: Path, fmt: str) -> None:
    # Far more than a pipe holds (64 KiB), so the writer is certain to meet the closed pipe.
    sql = "SELECT range AS n, repeat('x', 100) AS pad FROM range(200000)"
    with subprocess.Popen(
        [sys.executable, "-m", "memberpulse", "sql", sql, "--format", fmt],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(data_dir),
        cwd=data_dir,  # no .env file here
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()  # what `| head -1` reads before it exits
        proc.stdout.close()
        err = proc.stderr.read()
        code = proc.wait(timeout=120)
    assert first.strip() != b""
    assert err == b"", err.decode(errors="replace")
    assert code == 141
