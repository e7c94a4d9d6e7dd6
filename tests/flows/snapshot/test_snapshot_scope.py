"""The snapshot as some companies see it (``memberpulse sql --company``, ``memberpulse report --company``), on a
real snapshot written by two real runs over three companies' webhooks, failures, backfill and delivery log:
every table and view of the scoped copy holds exactly the chosen companies' rows of the whole snapshot, never a
row (or a value) of another company, and nothing is left out without a rule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from memberpulse.contracts.tables import PIPELINE_RUNS, SNAPSHOT_INFO
from memberpulse.errors import ConfigError, QueryError
from memberpulse.flows.snapshot import (
    SNAPSHOT_TABLES,
    SNAPSHOT_VIEWS,
    QueryLimits,
    latest_path,
    open_snapshot_file,
    parse_companies,
    query,
    scoped_snapshot,
)
from tests.support.companies_testkit import COMPANIES, several_companies

# What each company's rows hold that no other company's do: its ids, emails and names.
MARKERS = {
    company: (company, f"mem_{company[4:]}_", f"{company[4:]}1@", company[4:].title() + " ") for company in COMPANIES
}


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return several_companies(tmp_path_factory.mktemp("companies")).settings.snapshots_dir


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    con = open_snapshot_file(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _columns(path: Path, name: str) -> list[str]:
    return [row[0] for row in _rows(path, f"DESCRIBE {name}")]


@pytest.fixture(scope="module", params=[(c,) for c in COMPANIES] + [("biz_alpha", "biz_gamma")], ids=str)
def scoped(request: pytest.FixtureRequest, snapshots: Path) -> Iterator[tuple[tuple[str, ...], Path]]:
    with scoped_snapshot(snapshots, request.param) as path:
        yield request.param, path


@pytest.mark.parametrize("name", [*SNAPSHOT_TABLES, *SNAPSHOT_VIEWS])
def test_every_table_and_view_holds_exactly_the_chosen_companies_rows(
    snapshots: Path, scoped: tuple[tuple[str, ...], Path], name: str
) -> None:
    companies, path = scoped
    whole = latest_path(snapshots)
    columns = _columns(whole, name)
    assert _columns(path, name) == columns  # every table and view is there, in the same shape
    mine = _rows(path, f"SELECT * FROM {name} ORDER BY ALL")
    if "company_id" in columns:
        chosen = ", ".join(f"'{c}'" for c in companies)
        assert mine == _rows(whole, f"SELECT * FROM {name} WHERE company_id IN ({chosen}) ORDER BY ALL")
        assert {row[columns.index("company_id")] for row in mine} <= set(companies)
    elif name == SNAPSHOT_INFO.name:
        assert mine == _rows(whole, f"SELECT * FROM {name} ORDER BY ALL")
    else:
        assert name == PIPELINE_RUNS.name  # the only table without a company that is kept, scoped
    others = [marker for company in COMPANIES if company not in companies for marker in MARKERS[company]]
    leaked = [value for row in mine for value in row if isinstance(value, str) and any(m in value for m in others)]
    assert leaked == []


def test_the_companies_own_rows_are_there_and_the_forged_claim_is_no_ones(scoped: tuple[tuple[str, ...], Path]) -> None:
    companies, path = scoped
    counted = dict(_rows(path, "SELECT company_id, count(*) FROM member_activity GROUP BY ALL"))
    assert set(counted) == set(companies)
    # The landing refused a webhook whose (unverified) body claims biz_alpha: alpha never sees it.
    assert _rows(path, "SELECT count(*) FROM webhook_failures WHERE reason LIKE 'landing%'") == [(0,)]


def test_pipeline_runs_keeps_every_run_with_the_companies_own_counts(snapshots: Path) -> None:
    whole = latest_path(snapshots)
    runs = "SELECT run_id, status, started_at, finished_at FROM pipeline_runs ORDER BY started_at"
    beta = "SELECT run_id, sum(events_ingested) FROM pipeline_run_companies WHERE company_id = 'biz_beta' GROUP BY 1"
    lines = dict(_rows(whole, beta))
    counted = "SELECT run_id, events_ingested, rejects, rows_inserted, landing_rejections FROM pipeline_runs"
    with scoped_snapshot(snapshots, ["biz_beta"]) as path:
        assert _rows(path, runs) == _rows(whole, runs)
        counts = _rows(path, f"{counted} ORDER BY started_at")
    assert [(run_id, events) for run_id, events, *_ in counts] == [(r, lines.get(r, 0)) for r, *_ in counts]
    # beta's one parser refusal in the first run; inserts and the landing's refusals are not counted per company
    assert [tuple(rest) for _, _, *rest in counts] == [(1, None, None), (0, None, None)]


def test_a_company_the_snapshot_lacks_is_refused_naming_the_ones_it_has(snapshots: Path) -> None:
    with pytest.raises(ConfigError) as refused, scoped_snapshot(snapshots, ["biz_alpha", "biz_nope"]):
        pass
    assert refused.value.message.startswith("the snapshot has no company biz_nope; it has 3: biz_alpha, biz_beta")
    assert refused.value.exit_code == 2


def test_a_query_scoped_to_a_company_never_reaches_the_snapshot_itself(snapshots: Path) -> None:
    """The user's connection holds the scoped copy alone: the snapshot is neither attached nor attachable."""
    limits = QueryLimits(timeout_seconds=30, allow_files=False, companies=("biz_gamma",))
    attached = query(snapshots, "SELECT database_name, path FROM duckdb_databases() WHERE path IS NOT NULL", limits)
    assert [name for name, _ in attached.rows] == ["snapshot"]
    assert str(latest_path(snapshots)) not in str(attached.rows)
    with pytest.raises(QueryError, match=r"disabled|Permission"):
        query(snapshots, f"SELECT * FROM read_parquet('{snapshots.parent}/warehouse/**/*.parquet')", limits)


def test_companies_are_given_repeated_or_comma_separated() -> None:
    assert parse_companies(["biz_a,biz_b", " biz_c ", "biz_a", ",,"]) == ("biz_a", "biz_b", "biz_c")


def test_scoped_copies_are_removed_when_done(snapshots: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with scoped_snapshot(snapshots, ["biz_beta"]) as path:
        assert path.is_file() and not path.stat().st_mode & 0o222  # read-only
        with duckdb.connect(str(path), read_only=True) as con:
            assert con.execute("SELECT count(*) FROM member_activity").fetchone() == (4,)
    assert list(tmp_path.iterdir()) == []
