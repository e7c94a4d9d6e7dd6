"""The data dictionary has one definition (memberpulse/contracts: tables.py, views.py); its generated forms —
docs/data-dictionary.md, the Postgres comments migration, the snapshot's COMMENTs — must match it."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import duckdb
import polars as pl
import pytest

from memberpulse.contracts.dictionary import markdown, postgres_comments_migration, snapshot_comments
from memberpulse.contracts.tables import MEMBER_ACTIVITY, PIPELINE_RUNS, RECONCILIATION_DRIFT, SNAPSHOT_TABLES
from memberpulse.contracts.views import SNAPSHOT_VIEW_DEFINITIONS
from memberpulse.flows.snapshot import SNAPSHOT_VIEWS, open_latest, write_snapshot

ROOT = Path(__file__).resolve().parents[2]
MINE = "database_name = current_database() AND schema_name = 'main' AND NOT internal"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("data_dictionary", ROOT / "scripts" / "data_dictionary.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_files_are_current() -> None:
    script = _script()
    assert script.stale() == [], "run: .venv/bin/python scripts/data_dictionary.py"
    assert (ROOT / "docs" / "data-dictionary.md").read_text(encoding="utf-8") == markdown()
    latest = script.latest_comments_migration()
    assert latest is not None and latest.read_text(encoding="utf-8") == postgres_comments_migration()


def test_a_changed_description_makes_them_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    script = _script()
    monkeypatch.setattr(script, "markdown", lambda: markdown() + "\nchanged\n")
    monkeypatch.setattr(script, "postgres_comments_migration", lambda: postgres_comments_migration() + "-- x\n")
    assert script.stale() == ["docs/data-dictionary.md", "supabase/migrations/*_column_comments.sql"]


def test_every_table_view_and_column_is_in_the_dictionary() -> None:
    assert {v.name for v in SNAPSHOT_VIEW_DEFINITIONS} == set(SNAPSHOT_VIEWS)
    doc = markdown()
    for table in SNAPSHOT_TABLES:
        assert f"### `{table.name}`" in doc and all(f"| `{c.name}` |" in doc for c in table.columns)
        assert table.description and all(c.description for c in table.columns)
    for view in SNAPSHOT_VIEW_DEFINITIONS:
        assert f"### `{view.name}`" in doc and all(f"| `{name}` |" in doc for name in view.names)
        assert view.description and all(text for _, text in view.columns)


def test_quotes_in_a_description_survive_as_sql() -> None:
    target = 'COMMENT ON COLUMN "member_activity"."membership_id"'
    statement = next(s for s in snapshot_comments() if s.startswith(target))
    con = duckdb.connect()
    assert con.execute(f"SELECT {statement.rsplit(' IS ', 1)[1]}").fetchone() == (
        MEMBER_ACTIVITY.column("membership_id").description,
    )
    assert "''" in statement  # "Whop's membership id …"


def test_a_real_snapshot_carries_every_comment(tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    write_snapshot(
        snapshots,
        run_id="00000000-comments",
        run_at=datetime(2026, 11, 2, 9, 30, tzinfo=UTC),
        member_activity=pl.DataFrame(schema=MEMBER_ACTIVITY.schema),
        drift=pl.DataFrame(schema=RECONCILIATION_DRIFT.schema),
        pipeline_runs=pl.DataFrame(schema=PIPELINE_RUNS.schema),
        keep=1,
    )
    with open_latest(snapshots) as con:
        tables = dict(con.execute(f"SELECT table_name, comment FROM duckdb_tables() WHERE {MINE}").fetchall())
        views = dict(con.execute(f"SELECT view_name, comment FROM duckdb_views() WHERE {MINE}").fetchall())
        query = f"SELECT table_name, column_name, comment FROM duckdb_columns() WHERE {MINE}"
        columns = {(t, c): text for t, c, text in con.execute(query).fetchall()}
    assert tables == {t.name: t.description for t in SNAPSHOT_TABLES}
    assert views == {v.name: v.description for v in SNAPSHOT_VIEW_DEFINITIONS}
    expected = {(t.name, c.name): c.description for t in SNAPSHOT_TABLES for c in t.columns}
    expected |= {(v.name, name): text for v in SNAPSHOT_VIEW_DEFINITIONS for name, text in v.columns}
    assert columns == expected
