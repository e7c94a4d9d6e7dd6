"""``--company`` on ``memberpulse sql`` and ``memberpulse report``, against a snapshot written by real runs over
three companies: the rows and the report of the companies given, none of another's; an unknown company is exit 2
naming the ones the snapshot has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memberpulse.cli import main
from tests.support.companies_testkit import several_companies


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return several_companies(tmp_path_factory.mktemp("companies") / "data").settings.data_dir


@pytest.fixture(autouse=True)
def _env(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMBERPULSE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("COLUMNS", "160")


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert main(["sql", *args, "--format", "json"]) == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


def test_sql_sees_only_the_companies_given_repeated_or_comma_separated(capsys: pytest.CaptureFixture[str]) -> None:
    query = "SELECT company_id, count(*) AS n FROM member_activity GROUP BY ALL ORDER BY 1"
    assert _json(capsys, query, "--company", "biz_gamma") == [{"company_id": "biz_gamma", "n": 3}]
    both = [{"company_id": "biz_alpha", "n": 6}, {"company_id": "biz_gamma", "n": 3}]
    assert _json(capsys, query, "--company", "biz_gamma,biz_alpha") == both
    assert _json(capsys, query, "--company", "biz_alpha", "--company", "biz_gamma") == both
    whole = _json(capsys, query)
    assert [row["company_id"] for row in whole] == ["biz_alpha", "biz_beta", "biz_gamma"]


def test_an_export_is_scoped_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "events.csv"
    assert main(["sql", "SELECT DISTINCT company_id FROM events", "--company", "biz_beta", "--out", str(out)]) == 0
    assert out.read_text().splitlines() == ["company_id", "biz_beta"]


def test_an_unknown_company_is_exit_2_naming_the_companies_there_are(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "SELECT 1", "--company", "biz_alpha,biz_typo"]) == 2
    err = capsys.readouterr().err
    assert "no company biz_typo; it has 3: biz_alpha, biz_beta, biz_gamma" in err and "Traceback" not in err
    assert main(["report", "--company", "biz_typo"]) == 2
    assert "no company biz_typo" in capsys.readouterr().err


def test_a_scoped_report_shows_only_its_company_and_leaves_the_runs_report_alone(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshots = data_dir / "snapshots"
    whole = (snapshots / "report.html").read_bytes()
    assert main(["report", "--company", "biz_beta"]) == 0
    written = snapshots / "report-biz_beta.html"
    assert f"report written: {written}" in capsys.readouterr().out
    html = written.read_text(encoding="utf-8")
    assert "only company biz_beta" in html
    assert '<div class="value">4</div><div class="label">members</div>' in html  # beta's four, of thirteen
    for other in ("biz_alpha", "mem_alpha_", "alpha1@", "biz_gamma", "mem_gamma_", "gamma1@"):
        assert other not in html
    assert (snapshots / "report.html").read_bytes() == whole
