"""``memberpulse sql`` is read-only by DuckDB's own controls, not by parsing: every bypass a parser missed
(``EXPLAIN ANALYZE`` around a write, reading the process environment) is refused, nothing is written, and an
export says only what it did."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from memberpulse.cli import main
from tests.memberpulse.test_cli_analysts import data_dir, snapshot  # noqa: F401 - fixtures


def _digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "statement",
    [
        "EXPLAIN ANALYZE COPY (SELECT 'pwned') TO '{out}'",
        "EXPLAIN ANALYZE COPY (SELECT 'pwned') TO '{beside}'",
        "EXPLAIN ANALYZE CREATE TABLE pwned AS SELECT 1",
        "EXPLAIN ANALYZE SET enable_external_access = true",
        "SELECT * FROM read_text('/etc/shadow')",
        "SELECT * FROM read_text('/proc/self/environ')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "EXPLAIN ANALYZE ATTACH '{out}' AS other",
        "EXPLAIN ANALYZE ATTACH '{beside}/../latest.duckdb' AS whole",
        "EXPLAIN ANALYZE DETACH snapshot",
    ],
)
@pytest.mark.parametrize("scope", [[], ["--company", "biz"]], ids=["whole", "scoped"])
def test_no_statement_writes_or_reads_a_file(
    snapshot: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    statement: str,
    scope: list[str],
) -> None:
    """Scoped to a company, the query runs on a copy held the same way: the same statements fail the same way."""
    out, beside = tmp_path / "pwned.csv", snapshot.parent / "pwned.csv"
    before = _digest(snapshot.parent)
    code = main(["sql", statement.format(out=out, beside=beside), *scope])
    captured = capsys.readouterr()
    assert code == 1, captured
    assert "root:" not in captured.out and os.environ.get("PATH", "") not in captured.out
    assert not out.exists() and not beside.exists()
    assert _digest(snapshot.parent) == before
    # DuckDB's own message, whose caret lines point into the statement, and never a traceback.
    assert captured.err.startswith("memberpulse sql: ") and "Traceback" not in captured.err


def test_files_are_read_only_when_allowed(
    snapshot: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "extra.csv").write_text("a\n7\n")
    query = f"SELECT a FROM read_csv('{tmp_path / 'extra.csv'}')"
    assert main(["sql", query, "--format", "json"]) == 1
    assert "--allow-files" in capsys.readouterr().err
    assert main(["sql", query, "--format", "json", "--allow-files"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"a": 7}]


def test_an_export_that_cannot_be_written_fails_and_says_so(
    snapshot: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "no-such-dir" / "e.csv"
    assert main(["sql", "SELECT 1 AS one", "--out", str(missing)]) == 2
    captured = capsys.readouterr()
    assert "rows written" not in captured.out and "is not a directory" in captured.err
    assert not missing.parent.exists()


def test_an_export_accepts_any_single_select_even_one_ending_in_a_comment(
    snapshot: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "e.csv"
    query = "SELECT membership_id FROM member_activity ORDER BY 1 -- the three of them"
    assert main(["sql", query, "--out", str(out)]) == 0
    assert out.read_text().splitlines() == ["membership_id", "mem_1", "mem_2", "mem_3"]
    assert main(["sql", query, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == ["mem_1", "mem_2", "mem_3"]


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_a_runaway_query_is_stopped_by_its_timeout(
    snapshot: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    fmt: str,
) -> None:
    runaway = "SELECT count(*) FROM range(100000000) a, range(100000000) b"
    started = time.monotonic()
    assert main(["sql", runaway, "--timeout", "1", "--format", fmt]) == 1
    assert time.monotonic() - started < 60
    assert "ran past --timeout (1 s)" in capsys.readouterr().err


def test_a_company_filter_and_files_are_not_given_together(
    snapshot: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A query that may read files may read latest.duckdb itself: --company with --allow-files is refused."""
    assert main(["sql", "SELECT 1", "--company", "biz", "--allow-files"]) == 2
    assert "--company and --allow-files together" in capsys.readouterr().err
