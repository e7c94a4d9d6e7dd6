"""The snapshot as some companies see it: a temporary DuckDB file holding every table of ``latest.duckdb``
filtered to those companies, and the snapshot's views over them. ``memberpulse sql --company`` and ``memberpulse
report --company`` open that file instead of ``latest.duckdb``.

A copy, not views over the snapshot: a view in front of an attached snapshot is no boundary (a query could name
``snapshot.main.events`` itself), while a connection that never attached the snapshot cannot read what the copy
left out. The user's connection then opens the copy exactly as it opens ``latest.duckdb`` (read-only, files off,
configuration locked), so scoping adds no way around any of that. The copy is as large as the companies' rows.

Each table is taken by its rule (:func:`_scoped`): a table with ``company_id`` keeps those companies' rows (a
row whose company is null, e.g. a webhook the landing refused, is no company's and is left out); ``snapshot_info``
stays whole (it describes the file); ``pipeline_runs`` keeps every run with the companies' own counts from
``pipeline_run_companies`` (what cannot be told per company is null). A table without a rule is left out. Views
are this release's definitions over the copied tables, so every count is the companies' own.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import duckdb

from memberpulse.contracts.tables import (
    PIPELINE_RUN_COMPANIES,
    PIPELINE_RUNS,
    SNAPSHOT_INFO,
    SNAPSHOT_TABLES,
    Table,
    quote_ident,
)
from memberpulse.errors import ConfigError, StorageUnavailable
from memberpulse.flows.fsio import disk_full
from memberpulse.flows.snapshot._comments import comment_snapshot
from memberpulse.flows.snapshot._files import LATEST_NAME
from memberpulse.flows.snapshot._open import unreadable
from memberpulse.flows.snapshot._schema import VIEWS, quote_literal
from memberpulse.flows.snapshot._views import ANALYST_VIEWS

#: How many of the snapshot's companies an unknown ``--company`` lists.
COMPANIES_NAMED: Final = 20

# Each run with the chosen companies' counts. Events and rejects are exact (a run that read any for a company
# has a line for it; none: 0); drift is the lines' (null for a run with no line); what is not counted per
# company (inserted/updated/unchanged, the landing's refusals) is null.
_SCOPED_RUNS: Final = f"""
    WITH lines AS (
        SELECT run_id, sum(events_ingested) AS events_ingested, sum(rejects) AS rejects,
               sum(drift_count) AS drift_count
        FROM source.main.{PIPELINE_RUN_COMPANIES.name} WHERE company_id IN (SELECT company_id FROM _scope)
        GROUP BY ALL
    )
    SELECT r.run_id, r.flow, r.started_at, r.finished_at, r.status,
           CAST(coalesce(l.events_ingested, 0) AS BIGINT) AS events_ingested,
           CAST(coalesce(l.rejects, 0) AS BIGINT) AS rejects,
           CAST(NULL AS BIGINT) AS rows_inserted, CAST(NULL AS BIGINT) AS rows_updated,
           CAST(NULL AS BIGINT) AS rows_unchanged, CAST(l.drift_count AS BIGINT) AS drift_count, r.error,
           CAST(NULL AS BIGINT) AS landing_rejections
    FROM source.main.{PIPELINE_RUNS.name} AS r LEFT JOIN lines AS l USING (run_id)
    ORDER BY r.started_at
"""


def snapshot_companies(con: duckdb.DuckDBPyConnection, database: str = "source") -> list[str]:
    """Every company named anywhere in the snapshot attached as ``database``, sorted."""
    tables = [t.name for t in SNAPSHOT_TABLES if "company_id" in t.names and t.name != "member_activity_history"]
    present = _columns(con, database)
    union = " UNION ".join(
        f"SELECT company_id FROM {database}.main.{name} WHERE company_id IS NOT NULL"
        for name in tables
        if (name, "company_id") in present
    )
    return sorted(row[0] for row in con.execute(union).fetchall()) if union else []


def parse_companies(values: Sequence[str]) -> tuple[str, ...]:
    """``--company`` values (repeated, comma-separated or both) as distinct ids in the order given."""
    found = [part.strip() for value in values for part in value.split(",")]
    return tuple(dict.fromkeys(c for c in found if c))


def scoped_file_name(companies: Sequence[str]) -> str:
    """A file-name-safe word for ``companies`` (e.g. for a report's default name): their ids joined by ``+``,
    or, when that would be long, how many there are and a digest of them."""
    joined = "+".join(re.sub(r"[^0-9A-Za-z_-]", "_", c) for c in companies)
    if len(joined) <= 80:
        return joined
    return f"{len(companies)}-companies-{hashlib.sha256(','.join(companies).encode()).hexdigest()[:10]}"


@contextlib.contextmanager
def scoped_snapshot(snapshots_dir: Path, companies: Sequence[str]) -> Iterator[Path]:
    """A temporary DuckDB file (removed on exit) holding ``snapshots_dir/latest.duckdb`` as ``companies`` see
    it; ConfigError (exit 2) for a company the snapshot does not have, naming the ones it has."""
    source = snapshots_dir / LATEST_NAME
    if not source.is_file():
        raise ConfigError(f"no snapshot yet at {source}", hint="run `memberpulse run` to write the first one")
    with tempfile.TemporaryDirectory(prefix="memberpulse-scope-") as folder:
        path = Path(folder) / "scoped.duckdb"
        _build(source, path, companies)
        path.chmod(0o444)
        yield path


def _build(source: Path, path: Path, companies: Sequence[str]) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute("SET TimeZone = 'UTC'")
        try:
            con.execute(f"ATTACH {quote_literal(str(source.resolve()))} AS source (READ_ONLY)")
        except duckdb.Error as exc:
            raise unreadable(source, exc) from None
        present = _columns(con, "source")
        _require_current_layout(present, source)
        _require_known(con, companies)
        con.execute("CREATE TEMP TABLE _scope (company_id VARCHAR)")
        con.executemany("INSERT INTO _scope VALUES (?)", [[c] for c in companies])
        con.execute("BEGIN TRANSACTION")
        for table in SNAPSHOT_TABLES:
            query = _scoped(table, present)
            if query is not None:  # no rule: left out rather than shown whole
                con.execute(f"CREATE TABLE {quote_ident(table.name)} AS {query}")
        for name, sql in {**VIEWS, **ANALYST_VIEWS}.items():
            con.execute(f"CREATE VIEW {quote_ident(name)} AS {sql}")
        comment_snapshot(con)
        con.execute(f"COMMENT ON TABLE {PIPELINE_RUNS.name} IS {quote_literal(_SCOPED_RUNS_COMMENT)}")
        con.execute("COMMIT")
        con.execute("DETACH source")
        con.execute("CHECKPOINT")
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        if isinstance(exc, duckdb.IOException) or disk_full(exc):
            raise StorageUnavailable(
                f"could not write the scoped copy {path}: {first}", hint="check free space in TMPDIR"
            ) from None
        raise ConfigError(  # a table of another shape than this release writes (made by hand, say)
            f"the snapshot {source} cannot be scoped to companies: {first}",
            hint="run `memberpulse run` once: it writes the snapshot in this release's layout",
        ) from None
    finally:
        con.close()


_SCOPED_RUNS_COMMENT: Final = (
    "One row per flow run, with the chosen companies' own counts (from pipeline_run_companies); what is not "
    "counted per company (rows inserted, updated, unchanged; the landing's refusals) is null."
)


def _scoped(table: Table, present: set[tuple[str, str]]) -> str | None:
    """The query that fills ``table``'s scoped copy (see the module docstring), or None: left out."""
    whole = f"SELECT * FROM source.main.{quote_ident(table.name)}"
    if "company_id" in table.names:
        if (table.name, "company_id") not in present:  # loaded as given, without companies: no company's rows
            return f"{whole} WHERE false"
        return f"{whole} WHERE company_id IN (SELECT company_id FROM _scope)"
    if table.name == PIPELINE_RUNS.name:
        return _SCOPED_RUNS
    if table.name == SNAPSHOT_INFO.name:
        return whole
    return None


def _require_current_layout(present: set[tuple[str, str]], source: Path) -> None:
    """Every table this release writes: a snapshot an earlier release wrote lacks some (pipeline_run_companies)."""
    lacking = [t.name for t in SNAPSHOT_TABLES if not any(name == t.name for name, _ in present)]
    if lacking:
        raise ConfigError(
            f"the snapshot {source} was written by an earlier memberpulse (it has no {', '.join(lacking)})",
            hint="run `memberpulse run` once: it writes the snapshot in this release's layout",
        )


def _require_known(con: duckdb.DuckDBPyConnection, companies: Sequence[str]) -> None:
    known = snapshot_companies(con)
    unknown = [c for c in companies if c not in known]
    if not unknown:
        return
    shown = ", ".join(known[:COMPANIES_NAMED]) or "none"
    more = f" and {len(known) - COMPANIES_NAMED} more" if len(known) > COMPANIES_NAMED else ""
    raise ConfigError(
        f"the snapshot has no company {', '.join(unknown)}; it has {len(known)}: {shown}{more}",
        hint='give --company one of them; to list them: memberpulse sql "SELECT DISTINCT company_id FROM events"',
    )


def _columns(con: duckdb.DuckDBPyConnection, database: str) -> set[tuple[str, str]]:
    rows = con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = ? AND schema_name = 'main'",
        [database],
    ).fetchall()
    return {(str(t), str(c)) for t, c in rows}
