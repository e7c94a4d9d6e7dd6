"""One read-only statement against the latest snapshot (``memberpulse sql``): its rows, or every row exported
by DuckDB's COPY. Showing them is the CLI's (``memberpulse.cli.sql``).

Read-only is DuckDB's own doing, not a parser's guess: the snapshot is opened read-only, file system access is
off (``enable_external_access = false``: no ``COPY … TO``, ``read_text('/etc/shadow')``, ``ATTACH`` or extension
loading, however the statement is dressed up, ``EXPLAIN ANALYZE`` included) unless the caller allows files, and
the configuration is locked (``lock_configuration``) before the user's SQL runs. The statement-type check in
front only gives a clearer message. A timer interrupts a query that runs past its timeout.

csv and json are DuckDB's COPY output byte for byte, to a file (replaced atomically) or to a temporary file the
caller copies where it wants (standard output); parquet only to a file. The user's query runs on the locked
connection; its rows stream (Arrow batches) to a second, in-memory connection that runs only this module's own
COPY, so exporting never needs file access on the connection that runs user SQL.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from memberpulse.errors import ConfigError, QueryError
from memberpulse.flows.fsio import atomic_output
from memberpulse.flows.snapshot._files import LATEST_NAME
from memberpulse.flows.snapshot._open import open_snapshot_file
from memberpulse.flows.snapshot._schema import quote_literal
from memberpulse.flows.snapshot._scope import scoped_snapshot

EXPORT_FORMATS = {"csv": "FORMAT csv, HEADER true", "json": "FORMAT json, ARRAY true", "parquet": "FORMAT parquet"}
TEXT_FORMATS = ("csv", "json")  # what may go to standard output; parquet is binary, so only to a file
PRINTED_ROWS = 1000
# Statements that only read. Everything else (DML, DDL, ATTACH, COPY, SET, CALL ...) is refused before it runs,
# on top of the snapshot being attached read-only.
_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_ROWS_PER_BATCH = 100_000  # Arrow batches between the query and the export's COPY: bounded memory
T = TypeVar("T")


@dataclass(frozen=True)
class QueryLimits:
    """How a user's query may run: ``timeout_seconds`` before it is interrupted; ``allow_files`` lets it read
    files it names (``read_csv(...)``), which is off by default (the process environment is a file too);
    ``companies``, when given, are the only companies whose rows it sees (a scoped copy of the snapshot)."""

    timeout_seconds: float
    allow_files: bool
    companies: tuple[str, ...] = ()


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


@contextlib.contextmanager
def _locked(snapshots_dir: Path, limits: QueryLimits) -> Iterator[tuple[duckdb.DuckDBPyConnection, Callable[[], bool]]]:
    """The latest snapshot, read-only, files off (unless allowed), configuration locked; a timer interrupts
    whatever runs on it past the timeout. Yields the connection and whether the timer fired. With companies,
    the connection holds only the scoped copy of the snapshot, never the snapshot itself."""
    with contextlib.ExitStack() as stack:
        if limits.companies:
            if limits.allow_files:  # a query that may read files may read latest.duckdb itself, unscoped
                raise ConfigError(
                    "--company and --allow-files together: a query that reads files could read the whole snapshot",
                    hint="leave out --allow-files to see only those companies' rows",
                )
            con = open_snapshot_file(stack.enter_context(scoped_snapshot(snapshots_dir, limits.companies)))
        else:
            con = connect_latest(snapshots_dir)
        yield stack.enter_context(_guarded_connection(con, limits))


@contextlib.contextmanager
def _guarded_connection(
    con: duckdb.DuckDBPyConnection, limits: QueryLimits
) -> Iterator[tuple[duckdb.DuckDBPyConnection, Callable[[], bool]]]:
    fired = threading.Event()

    def stop() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(limits.timeout_seconds, stop)
    try:
        con.execute("SET TimeZone = 'UTC'")
        if not limits.allow_files:
            con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        timer.start()
        yield con, fired.is_set
    finally:
        timer.cancel()
        con.close()


def _guarded(step: Callable[[], T], limits: QueryLimits, fired: Callable[[], bool], writing: Path | None = None) -> T:
    """``step()``, with DuckDB's refusal or failure as a QueryError that says what to do (a file ``writing``
    that cannot be written: a ConfigError, exit 2)."""
    try:
        return step()
    except duckdb.Error as exc:
        if writing is not None and isinstance(exc, duckdb.IOException) and not fired():
            raise ConfigError(f"cannot write {writing}: {exc}", hint="give --out a file you may write") from None
        if fired():
            raise QueryError(
                f"the query ran past --timeout ({limits.timeout_seconds:g} s) and was stopped",
                hint="narrow it (WHERE, LIMIT), or give --timeout more seconds",
            ) from None
        if isinstance(exc, duckdb.PermissionException):
            raise QueryError(
                str(exc), hint="a query reads only the snapshot; --allow-files lets it read files"
            ) from None
        raise QueryError(str(exc)) from exc


def query(snapshots_dir: Path, sql: str, limits: QueryLimits, *, limit: int = PRINTED_ROWS) -> QueryResult:
    """Up to ``limit`` rows of ``sql``, run read-only against the latest snapshot (times in UTC)."""
    with _locked(snapshots_dir, limits) as (con, fired):
        kind = check_read_only(con, sql)

        def first_rows() -> tuple[list[str], list[tuple[Any, ...]]]:
            cursor = con.execute(sql)
            return [d[0] for d in cursor.description or []], cursor.fetchmany(limit + 1)

        columns, rows = _guarded(first_rows, limits, fired)
    return QueryResult(columns, rows[:limit], len(rows) > limit, plan=kind == duckdb.StatementType.EXPLAIN)


def _copy(
    snapshots_dir: Path,
    sql: str,
    limits: QueryLimits,
    *,
    fmt: str,
    target: contextlib.AbstractContextManager[Path],
) -> int:
    """Run ``sql`` read-only and COPY every row, as ``fmt``, to the path ``target`` yields; returns the count.

    ``target`` is entered only once the query is known to be allowed (no file made for a refused one)."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}", hint=f"use one of {', '.join(EXPORT_FORMATS)}")
    with _locked(snapshots_dir, limits) as (con, fired):
        check_read_only(con, sql)
        rows = _guarded(lambda: con.sql(sql).to_arrow_reader(_ROWS_PER_BATCH), limits, fired)
        with target as tmp:
            writer = duckdb.connect()  # runs only the COPY below, never the user's SQL
            try:
                writer.execute("SET TimeZone = 'UTC'")
                writer.register("exported_rows", rows)
                copy = f"COPY (SELECT * FROM exported_rows) TO {quote_literal(str(tmp))} ({EXPORT_FORMATS[fmt]})"
                done = _guarded(lambda: writer.execute(copy).fetchone(), limits, fired, writing=tmp)
            finally:
                writer.close()
    return int(done[0]) if done else 0


def export(snapshots_dir: Path, sql: str, limits: QueryLimits, *, fmt: str, out: Path) -> int:
    """Write every row of ``sql`` to ``out`` with DuckDB's COPY (replaced atomically); returns the row count.
    ``out``'s folder must exist, and nothing is said written that was not (``fsio.atomic_output``)."""
    return _copy(snapshots_dir, sql, limits, fmt=fmt, target=atomic_output(out))


@contextlib.contextmanager
def exported(snapshots_dir: Path, sql: str, limits: QueryLimits, *, fmt: str) -> Iterator[Path]:
    """Every row of ``sql`` as DuckDB's COPY writes them, in a temporary file that lasts while the context is
    open (for the caller to copy unchanged, e.g. to standard output)."""
    with tempfile.TemporaryDirectory(prefix="memberpulse-sql-") as tmp_dir:
        path = Path(tmp_dir) / f"rows.{fmt}"
        _copy(snapshots_dir, sql, limits, fmt=fmt, target=contextlib.nullcontext(path))  # in a temporary dir: no rename
        yield path
