"""One read-only statement against the latest snapshot (``memberpulse sql``): its rows, or every row exported
by DuckDB's COPY. Showing them is the CLI's (``memberpulse.cli.sql``).

csv and json are DuckDB's COPY output byte for byte, to a file (replaced atomically) or to a temporary file the
caller copies where it wants (standard output); parquet only to a file.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from memberpulse.errors import ConfigError, QueryError
from memberpulse.flows.fsio import atomic_target
from memberpulse.flows.snapshot._files import LATEST_NAME
from memberpulse.flows.snapshot._schema import quote_literal

EXPORT_FORMATS = {"csv": "FORMAT csv, HEADER true", "json": "FORMAT json, ARRAY true", "parquet": "FORMAT parquet"}
TEXT_FORMATS = ("csv", "json")  # what may go to standard output; parquet is binary, so only to a file
PRINTED_ROWS = 1000
# Statements that only read. Everything else (DML, DDL, ATTACH, COPY, SET, CALL ...) is refused before it runs,
# on top of the snapshot being attached read-only.
_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


@dataclass(frozen=True)
class QueryResult:
    """The first rows of a query: ``truncated`` when more were left out; ``plan`` for an EXPLAIN (its text
    keeps its lines)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool
    plan: bool


def connect_latest(snapshots_dir: Path) -> duckdb.DuckDBPyConnection:
    from memberpulse.flows.snapshot import open_latest

    path = snapshots_dir / LATEST_NAME
    if not path.is_file():
        raise ConfigError(
            f"no snapshot yet at {path}",
            hint="run `memberpulse run` (or `memberpulse demo`, then MEMBERPULSE_DATA_DIR=<data dir>/demo)",
        )
    return open_latest(snapshots_dir)


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.StatementType:
    """The statement's type, when ``sql`` is exactly one statement that only reads; QueryError otherwise."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from exc
    if len(statements) != 1:
        raise QueryError(f"give exactly one statement (got {len(statements)})", hint="run them one at a time")
    kind = statements[0].type
    if kind not in _READ_ONLY:
        raise QueryError(
            f"refused: {kind.name} statements are not run, the snapshot is read-only",
            hint="memberpulse sql runs SELECT (and EXPLAIN); export with --format csv|json, or --out FILE",
        )
    return kind


def query(snapshots_dir: Path, sql: str, *, limit: int = PRINTED_ROWS) -> QueryResult:
    """Up to ``limit`` rows of ``sql``, run read-only against the latest snapshot (times in UTC)."""
    con = connect_latest(snapshots_dir)
    try:
        con.execute("SET TimeZone = 'UTC'")
        kind = check_read_only(con, sql)
        try:
            cursor = con.execute(sql)
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchmany(limit + 1)
        except duckdb.Error as exc:
            raise QueryError(str(exc)) from exc
    finally:
        con.close()
    return QueryResult(columns, rows[:limit], len(rows) > limit, plan=kind == duckdb.StatementType.EXPLAIN)


def _copy(snapshots_dir: Path, sql: str, *, fmt: str, target: contextlib.AbstractContextManager[Path]) -> int:
    """Run ``sql`` read-only and COPY every row, as ``fmt``, to the path ``target`` yields; returns the count.

    ``target`` is entered only once the query is known to be allowed (no file or folder made for a refused one)."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}", hint=f"use one of {', '.join(EXPORT_FORMATS)}")
    con = connect_latest(snapshots_dir)
    try:
        con.execute("SET TimeZone = 'UTC'")
        check_read_only(con, sql)
        body = sql.strip().rstrip(";")
        with target as tmp:
            try:
                done = con.execute(f"COPY ({body}) TO {quote_literal(str(tmp))} ({EXPORT_FORMATS[fmt]})").fetchone()
            except duckdb.Error as exc:
                raise QueryError(str(exc)) from exc
    finally:
        con.close()
    return int(done[0]) if done else 0


def export(snapshots_dir: Path, sql: str, *, fmt: str, out: Path) -> int:
    """Write every row of ``sql`` to ``out`` with DuckDB's COPY (replaced atomically); returns the row count."""
    return _copy(snapshots_dir, sql, fmt=fmt, target=atomic_target(out))


@contextlib.contextmanager
def exported(snapshots_dir: Path, sql: str, *, fmt: str) -> Iterator[Path]:
    """Every row of ``sql`` as DuckDB's COPY writes them, in a temporary file that lasts while the context is
    open (for the caller to copy unchanged, e.g. to standard output)."""
    with tempfile.TemporaryDirectory(prefix="memberpulse-sql-") as tmp_dir:
        path = Path(tmp_dir) / f"rows.{fmt}"
        _copy(snapshots_dir, sql, fmt=fmt, target=contextlib.nullcontext(path))  # in a temporary dir: no rename
        yield path
