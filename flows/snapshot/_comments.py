"""The snapshot's data dictionary on the objects themselves: a ``COMMENT`` on every table, view and column.

The text comes from :mod:`memberpulse.contracts.dictionary` (one definition, also behind the Postgres comments
and ``docs/data-dictionary.md``); analysts read it with ``duckdb_tables()``, ``duckdb_views()`` and
``duckdb_columns()``.
"""

from __future__ import annotations

import duckdb

from memberpulse.contracts.dictionary import snapshot_comment_targets


def comment_snapshot(con: duckdb.DuckDBPyConnection) -> None:
    """Comment every table, view and column; call once, after they all exist.

    A column the definitions describe but the file lacks (a table loaded as given, from a frame with fewer
    columns) is skipped rather than failing the snapshot."""
    present = set(
        con.execute(
            "SELECT table_name, column_name FROM duckdb_columns()"
            " WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal"
        ).fetchall()
    )
    for name, column, statement in snapshot_comment_targets():
        if column is None or (name, column) in present:
            con.execute(statement)
