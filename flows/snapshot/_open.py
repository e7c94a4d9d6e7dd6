"""Opening a snapshot file for reading: the one way ``open_latest``, ``memberpulse sql`` and the report do it."""

from __future__ import annotations

from pathlib import Path

import duckdb

from memberpulse.errors import CorruptState
from memberpulse.flows.snapshot._schema import quote_literal


def open_snapshot_file(path: Path) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory connection with the snapshot file ``path`` ATTACHed read-only as ``snapshot`` and in
    use (``latest.duckdb``, or a scoped copy of it: :func:`scoped_snapshot`)."""
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"ATTACH {quote_literal(str(path.resolve()))} AS snapshot (READ_ONLY)")
        con.execute("USE snapshot")
    except duckdb.Error as exc:
        con.close()
        raise unreadable(path, exc) from None
    except BaseException:
        con.close()
        raise
    return con


def unreadable(path: Path, exc: duckdb.Error) -> CorruptState:
    """What a snapshot file DuckDB cannot open is, and its remedy."""
    return CorruptState(
        f"the snapshot {path} cannot be read: {str(exc).strip().splitlines()[0]}",
        path=str(path),
        hint=f"delete {path.name} and .build.json beside it, then `memberpulse run`: it builds a full snapshot",
    )
