"""The report's index across companies: members, the share active and at risk, churn and drift per company,
largest first, on a snapshot written by real runs over three companies; shown only when there is more than one
company to compare, and with ``--company`` (a scoped copy) of those companies alone. No browser here (the
layout is checked in Chromium by test_report_browser)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html import unescape
from pathlib import Path

import polars as pl
import pytest

from memberpulse.contracts.tables import MEMBER_ACTIVITY, PIPELINE_RUNS, RECONCILIATION_DRIFT
from memberpulse.flows.report import COMPANY_INDEX_CHART, build_report
from memberpulse.flows.report._queries import COMPANIES_SHOWN
from memberpulse.flows.snapshot import latest_path, open_snapshot_file, write_snapshot
from tests.support.companies_testkit import several_companies

INDEX = re.compile(r'<section class="card wide" data-table="company-index">.*?</section>', re.S)


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return several_companies(tmp_path_factory.mktemp("companies")).settings.snapshots_dir


def _index_rows(html: str) -> list[list[str]]:
    [table] = INDEX.findall(html)
    return [[unescape(re.sub(r"<[^>]+>", "", cell)) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", table) if "<td" in row]  # fmt: skip


def _expected(snapshots: Path) -> list[list[str]]:
    """The index worked out from the snapshot's own tables, one question at a time."""
    con = open_snapshot_file(latest_path(snapshots))
    try:
        members = con.execute("SELECT company_id, status, count(*) FROM member_activity GROUP BY ALL").fetchall()
        churned = dict(con.execute(
            "SELECT company_id, count(DISTINCT membership_id) FROM events, snapshot_info "
            "WHERE kind = 'left' AND event_at > run_at - INTERVAL 30 DAY AND event_at <= run_at GROUP BY ALL"
        ).fetchall())  # fmt: skip
        drifting = dict(con.execute("SELECT company_id, count(*) FROM reconciliation_drift GROUP BY ALL").fetchall())
    finally:
        con.close()
    by: dict[str, dict[str, int]] = {}
    for company, status, n in members:
        by.setdefault(company, {})[status] = n
    share = lambda part, whole: f"{part:,} ({100 * part / whole:.1f}%)"  # noqa: E731
    rows = []
    for company, counts in sorted(by.items(), key=lambda item: (-sum(item[1].values()), item[0])):
        total = sum(counts.values())
        rows.append([company, str(total), share(counts.get("active", 0), total), share(counts.get("at_risk", 0), total),
                     share(churned.get(company, 0), total), share(drifting.get(company, 0), total)])  # fmt: skip
    return rows


def test_the_index_compares_every_company_largest_first(snapshots: Path) -> None:
    html = build_report(snapshots)
    rows = _index_rows(html)
    assert rows == _expected(snapshots)
    assert [row[0] for row in rows] == ["biz_alpha", "biz_beta", "biz_gamma"]  # 6, 4 and 3 members
    assert rows[1][4] == "2 (50.0%)"  # beta: member 3 left the day before the first run, member 2 before the second
    assert html.index(f'id="chart-{COMPANY_INDEX_CHART}"') < html.index('data-table="company-index"')
    assert html.index('data-table="company-index"') < html.index('id="chart-status-over-time"')  # first


def test_scoped_to_some_companies_the_index_lists_them_and_to_one_there_is_none(snapshots: Path) -> None:
    two = build_report(snapshots, ("biz_gamma", "biz_beta"))
    assert [row[0] for row in _index_rows(two)] == ["biz_beta", "biz_gamma"]
    assert _index_rows(two) == [row for row in _expected(snapshots) if row[0] in ("biz_beta", "biz_gamma")]
    one = build_report(snapshots, ("biz_gamma",))
    assert not INDEX.findall(one) and f'id="chart-{COMPANY_INDEX_CHART}"' not in one


def test_a_deployment_of_many_companies_lists_the_largest_and_says_how_many(tmp_path: Path) -> None:
    run_at = datetime(2026, 11, 18, 12, tzinfo=UTC)
    companies = COMPANIES_SHOWN + 10
    members = pl.DataFrame(
        {"membership_id": [f"mem_{c}_{n}" for c in range(companies) for n in range(c + 1)],
         "company_id": [f"biz_{c:03d}" for c in range(companies) for _ in range(c + 1)],
         "status": "active", "engagement_score": 80, "valid": True, "total_sessions": 1, "updated_at": run_at},
    )  # fmt: skip
    members = members.with_columns(pl.lit(None, dtype).alias(name) for name, dtype in MEMBER_ACTIVITY.schema.items()
                                   if name not in members.columns).cast(dict(MEMBER_ACTIVITY.schema))  # fmt: skip
    write_snapshot(tmp_path, run_id="many", run_at=run_at, member_activity=members,
                   drift=RECONCILIATION_DRIFT.schema.to_frame(), pipeline_runs=PIPELINE_RUNS.schema.to_frame(),
                   keep=1)  # fmt: skip
    html = build_report(tmp_path)
    rows = _index_rows(html)
    assert len(rows) == COMPANIES_SHOWN and rows[0][:2] == [f"biz_{companies - 1:03d}", str(companies)]
    assert f"The {COMPANIES_SHOWN} largest of {companies} are listed." in html
    assert f"Showing the 20 largest of {companies} companies." in html
