"""``memberpulse sql``: one read-only statement against the latest snapshot, printed or exported by DuckDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
from rich.console import Console
from rich.table import Table

from memberpulse.errors import ConfigError, QueryError
from memberpulse.flows.fsio import atomic_target
from memberpulse.flows.snapshot._files import LATEST_NAME
from memberpulse.flows.snapshot._schema import quote_literal

EXPORT_FORMATS = {"csv": "FORMAT csv, HEADER true", "json": "FORMAT json, ARRAY true", "parquet": "FORMAT parquet"}
PRINTED_ROWS = 1000
# Statements that only read. Everything else (DML, DDL, ATTACH, COPY, SET, CALL ...) is refused before it runs,
# on top of the snapshot being attached read-only.
_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def connect_latest(snapshots_dir: Path) -> duckdb.DuckDBPyConnection:
    from memberpulse.flows.snapshot import open_latest

    path = snapshots_dir / LATEST_NAME
    if not path.is_file():
        raise ConfigError(
            f"no snapshot yet at {path}",
            hint="run `memberpulse run` (or `memberpulse demo`, then MEMBERPULSE_DATA_DIR=<data dir>/demo)",
        )
    return open_latest(snapshots_dir)


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
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
            hint="memberpulse sql runs SELECT (and EXPLAIN); export with --format csv|json|parquet --out FILE",
        )


def query(snapshots_dir: Path, sql: str, *, limit: int = PRINTED_ROWS) -> tuple[list[str], list[tuple[Any, ...]], bool]:
    """(column names, up to ``limit`` rows, whether more rows were left out)."""
    con = connect_latest(snapshots_dir)
    try:
        con.execute("SET TimeZone = 'UTC'")
        check_read_only(con, sql)
        try:
            cursor = con.execute(sql)
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchmany(limit + 1)
        except duckdb.Error as exc:
            raise QueryError(str(exc)) from exc
    finally:
        con.close()
    return columns, rows[:limit], len(rows) > limit


def export(snapshots_dir: Path, sql: str, *, fmt: str, out: Path) -> int:
    """Write every row of ``sql`` to ``out`` with DuckDB's COPY (replaced atomically); returns the row count."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}", hint=f"use one of {', '.join(EXPORT_FORMATS)}")
    con = connect_latest(snapshots_dir)
    try:
        con.execute("SET TimeZone = 'UTC'")
        check_read_only(con, sql)
        body = sql.strip().rstrip(";")
        with atomic_target(out) as tmp:
            try:
                done = con.execute(f"COPY ({body}) TO {quote_literal(str(tmp))} ({EXPORT_FORMATS[fmt]})").fetchone()
            except duckdb.Error as exc:
                raise QueryError(str(exc)) from exc
    finally:
        con.close()
    return int(done[0]) if done else 0


def run_sql(snapshots_dir: Path, sql: str, *, fmt: str, out: Path | None, console: Console | None = None) -> int:
    """``memberpulse sql``: print the rows as a table, or export them all with ``--format ... --out FILE``."""
    console = console or Console()
    if out is not None:
        fmt = fmt if fmt != "table" else out.suffix.lstrip(".").lower()
        if fmt not in EXPORT_FORMATS:
            raise ConfigError(f"cannot tell the export format of {out}", hint="add --format csv|json|parquet")
        rows = export(snapshots_dir, sql, fmt=fmt, out=out)
        console.print(f"{rows} rows written to {out}", highlight=False)
        return 0
    if fmt != "table":
        raise ConfigError(f"--format {fmt} writes a file", hint="add --out FILE")
    columns, found, more = query(snapshots_dir, sql)
    table = Table(*columns, show_lines=False, header_style="bold")
    for row in found:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    console.print(table)
    if more:
        console.print(f"(first {len(found)} rows shown; export them all with --format csv --out FILE)")
    return 0
