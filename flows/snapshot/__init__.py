"""DuckDB snapshots for analysts: one file per run, swapped in atomically as ``snapshots/latest.duckdb``.

Tables: ``member_activity`` (as published), ``events``, ``member_activity_history`` (one row per member per
run), ``reconciliation_drift``, ``pipeline_runs``, ``pipeline_run_companies``, ``webhook_failures``,
``webhook_deliveries``, ``snapshot_info``, ``whop_member_access``. Views: ``members_at_risk_now``,
``status_counts_per_day``, ``new_members_per_week``, and for the next questions ``weekly_cohort_retention``,
``status_transitions``, ``access_time_disagreements``, ``webhook_delivery_health`` (columns in
``VIEW_COLUMNS``); each leads with ``company_id`` and counts per company.

Analysts query the latest one read-only: :func:`query` (the first rows), :func:`export` (every row to a file)
and :func:`exported` (every row in a temporary file); ``memberpulse sql`` shows them. With
``QueryLimits.companies`` they query :func:`scoped_snapshot`, a copy holding only those companies' rows.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from memberpulse.errors import InvalidInput
from memberpulse.flows.snapshot._files import LATEST_NAME
from memberpulse.flows.snapshot._history import history_file_time, thin_history
from memberpulse.flows.snapshot._incremental import SnapshotLineage, read_build_record
from memberpulse.flows.snapshot._open import open_snapshot_file
from memberpulse.flows.snapshot._query import (
    EXPORT_FORMATS,
    PRINTED_ROWS,
    TEXT_FORMATS,
    QueryLimits,
    QueryResult,
    export,
    exported,
    query,
)
from memberpulse.flows.snapshot._schema import TABLES, VIEWS
from memberpulse.flows.snapshot._scope import parse_companies, scoped_file_name, scoped_snapshot
from memberpulse.flows.snapshot._views import ANALYST_VIEWS, VIEW_COLUMNS
from memberpulse.flows.snapshot._whop_access import whop_access
from memberpulse.flows.snapshot._writer import write_snapshot

SNAPSHOT_TABLES: tuple[str, ...] = TABLES
SNAPSHOT_VIEWS: tuple[str, ...] = (*VIEWS, *ANALYST_VIEWS)


def latest_path(snapshots_dir: Path) -> Path:
    return snapshots_dir / LATEST_NAME


def open_latest(snapshots_dir: Path) -> duckdb.DuckDBPyConnection:
    """A connection to the current ``latest.duckdb``, read-only, with its tables and views on the search path.

    The file is ATTACHed to a fresh in-memory database instead of ``duckdb.connect(path)``: DuckDB reuses an
    already-open database for the same path within a process, which would hand back the previous snapshot
    after a swap.
    """
    path = latest_path(snapshots_dir)
    if not path.is_file():
        raise InvalidInput(
            f"no snapshot yet at {path}",
            value=str(path),
            hint="run `memberpulse run` (or `memberpulse demo`) to write the first one",
        )
    return open_snapshot_file(path)


__all__ = [
    "EXPORT_FORMATS",
    "LATEST_NAME",
    "PRINTED_ROWS",
    "SNAPSHOT_TABLES",
    "SNAPSHOT_VIEWS",
    "TEXT_FORMATS",
    "VIEW_COLUMNS",
    "QueryLimits",
    "QueryResult",
    "SnapshotLineage",
    "export",
    "exported",
    "history_file_time",
    "latest_path",
    "open_latest",
    "open_snapshot_file",
    "parse_companies",
    "query",
    "read_build_record",
    "scoped_file_name",
    "scoped_snapshot",
    "thin_history",
    "whop_access",
    "write_snapshot",
]
