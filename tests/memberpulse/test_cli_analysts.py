"""``memberpulse sql`` and ``memberpulse report`` against a real DuckDB snapshot with known rows."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from memberpulse.cli import main
from memberpulse.flows.publish import PipelineRun
from memberpulse.flows.snapshot import latest_path, write_snapshot

RUN_AT = datetime(2026, 11, 18, 12, tzinfo=UTC)
TS = pl.Datetime("us", "UTC")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEMBERPULSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "160")
    return tmp_path


@pytest.fixture
def snapshot(data_dir: Path) -> Path:
    members = pl.DataFrame(
        {
            "membership_id": ["mem_1", "mem_2", "mem_3"],
            "company_id": ["biz"] * 3,
            "user_id": ["u1", "u2", "u3"],
            "member_name": ["Ada", "Bo", "Cy"],
            "email": ["ada@example.com", "bo@example.com", "cy@example.com"],
            "status": ["active", "at_risk", "active"],
            "engagement_score": [90, 20, 70],
            "last_active": [RUN_AT, RUN_AT, RUN_AT],
            "joined_at": [RUN_AT, RUN_AT, RUN_AT],
            "total_sessions": [3, 1, 2],
            "membership_status": ["active"] * 3,
            "valid": [True, True, True],
            "updated_at": [RUN_AT] * 3,
        },
        schema_overrides={"last_active": TS, "joined_at": TS, "updated_at": TS},
    )
    snapshots = data_dir / "snapshots"
    write_snapshot(
        snapshots,
        run_id="cli-test",
        run_at=RUN_AT,
        member_activity=members,
        drift=pl.DataFrame(schema={"membership_id": pl.Utf8, "reason": pl.Utf8}),
        pipeline_runs=pl.DataFrame([RUN.as_row()]),
        keep=2,
    )
    return latest_path(snapshots)


RUN = PipelineRun(run_id="cli-test", flow="reconcile", started_at=RUN_AT, status="completed", finished_at=RUN_AT)
QUERY = "SELECT status, count(*) AS members FROM member_activity GROUP BY ALL ORDER BY status"


def test_sql_prints_a_table(snapshot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", QUERY]) == 0
    lines = [line.replace("│", " ").replace("┃", " ").split() for line in capsys.readouterr().out.splitlines()]
    assert ["status", "members"] in lines and ["active", "2"] in lines and ["at_risk", "1"] in lines


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_sql_exports_every_row(snapshot: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    assert main(["sql", QUERY, "--format", fmt, "--out", str(out)]) == 0
    expected = [{"status": "active", "members": 2}, {"status": "at_risk", "members": 1}]
    if fmt == "csv":
        rows = list(csv.reader(out.open()))
        assert rows == [["status", "members"], ["active", "2"], ["at_risk", "1"]]
    elif fmt == "json":
        assert json.loads(out.read_text()) == expected
    else:
        assert pl.read_parquet(out).to_dicts() == expected


def test_sql_export_format_comes_from_the_file_name(snapshot: Path, tmp_path: Path) -> None:
    out = tmp_path / "members.csv"
    assert main(["sql", "SELECT member_name FROM member_activity ORDER BY 1", "--out", str(out)]) == 0
    assert out.read_text().split() == ["member_name", "Ada", "Bo", "Cy"]


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM member_activity",
        "UPDATE member_activity SET status = 'x'",
        "CREATE TABLE t AS SELECT 1",
        "COPY member_activity TO 'stolen.csv'",
        "ATTACH 'other.duckdb' AS o",
        "SELECT 1; DROP TABLE member_activity",
    ],
)
def test_sql_refuses_anything_but_a_read(snapshot: Path, sql: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot.read_bytes()
    assert main(["sql", sql]) == 1
    err = capsys.readouterr().err
    assert "refused" in err or "one statement" in err
    assert snapshot.read_bytes() == before and not Path("stolen.csv").exists()


def test_sql_error_exits_1_with_duckdbs_message(snapshot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "SELECT nope FROM member_activity"]) == 1
    assert 'Referenced column "nope" not found' in capsys.readouterr().err


def test_no_snapshot_yet_exits_2_with_the_fix(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "SELECT 1"]) == 2
    assert "no snapshot yet" in (err := capsys.readouterr().err) and "memberpulse run" in err
    assert main(["report"]) == 2
    assert "no snapshot yet" in capsys.readouterr().err


def test_parquet_without_a_file_exits_2(snapshot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # csv and json go to standard output without --out; binary parquet does not, redirected or not.
    assert main(["sql", QUERY, "--format", "parquet"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("memberpulse sql: ") and captured.err.count("\n") == 1
    assert "--out FILE" in captured.err


def test_report_writes_where_asked(snapshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "elsewhere" / "members.html"
    out.parent.mkdir()  # an existing folder: --out makes no directories (a typo must not create one)
    assert main(["report", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "1 members at risk now" in html
    assert not (snapshot.parent / "report.html").exists()
