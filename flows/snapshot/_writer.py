"""Build one DuckDB snapshot file from a run's frames and parquet files, then swap it in as ``latest``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from memberpulse import transforms
from memberpulse.contracts.checkpoints import checkpoint
from memberpulse.contracts.tables import (
    MEMBER_ACTIVITY,
    MEMBER_ACTIVITY_HISTORY,
    PIPELINE_RUN_COMPANIES,
    RECONCILIATION_DRIFT,
    SNAPSHOT_INFO,
    WEBHOOK_DELIVERIES,
    WEBHOOK_FAILURES,
    WHOP_MEMBER_ACCESS,
    Table,
    quote_ident,
)
from memberpulse.contracts.times import UTC_US
from memberpulse.errors import InvalidInput, StorageUnavailable
from memberpulse.flows.fsio import disk_full
from memberpulse.flows.snapshot import _files
from memberpulse.flows.snapshot._comments import comment_snapshot
from memberpulse.flows.snapshot._history import history_file_time
from memberpulse.flows.snapshot._incremental import (
    PreviousBuild,
    SnapshotLineage,
    copy_for_update,
    history_versions,
    usable_previous,
    write_record,
)
from memberpulse.flows.snapshot._schema import HISTORY_REQUIRED, MEMBER_ACTIVITY_REQUIRED, VIEWS
from memberpulse.flows.snapshot._views import ANALYST_VIEWS
from memberpulse.flows.state_codec import SnapshotBuild

# Whop's access times, or a function giving them (read only when the table is rebuilt).
WhopAccess = pl.DataFrame | Callable[[], pl.DataFrame | None] | None

# Analysts open snapshots with whatever DuckDB they have (CLI, DBeaver, an older Python package). DuckDB 2.0's
# default file format is unreadable before 2.0; this one opens in every DuckDB since 1.1, at no cost measured.
STORAGE_COMPATIBILITY = "v1.1.0"


def write_snapshot(
    snapshots_dir: Path,
    *,
    run_id: str,
    run_at: datetime,
    member_activity: pl.DataFrame,
    events: pl.DataFrame | None = None,
    events_parquet: Sequence[Path] | None = None,
    history_parquet: Sequence[Path] | None = None,
    drift: pl.DataFrame,
    pipeline_runs: pl.DataFrame,
    keep: int,
    whop_access: WhopAccess = None,
    own_file: str | None = None,
    webhook_failures: pl.DataFrame | None = None,
    webhook_deliveries: pl.DataFrame | None = None,
    lineage: SnapshotLineage | None = None,
    pipeline_run_companies: pl.DataFrame | None = None,
) -> Path:
    """Write this run's snapshot to ``snapshots_dir/<run_at>-<run_id8>.duckdb`` and make it ``latest.duckdb``;
    or to ``snapshots_dir/<own_file>`` alone, no swap and no retention (a backdated run's own file).

    ``events`` (a frame) or ``events_parquet`` (files DuckDB loads, bypassing Python): the parsed events (neither:
    none yet). ``history_parquet``: one file per run (this one's included) of scored member rows, each with a
    ``run_at`` column or named ``<YYYYMMDDTHHMMSSffffffZ>...``. ``whop_access``, ``webhook_failures``,
    ``webhook_deliveries``, ``pipeline_run_companies``: those tables (None: empty). ``lineage`` (what changed
    since the previous run) lets it update a copy of the previous one. Older snapshots past ``keep`` go."""
    _check_inputs(keep=keep, events=events, events_parquet=events_parquet, member_activity=member_activity,
                  drift=drift, pipeline_runs=pipeline_runs)  # fmt: skip
    final = snapshots_dir / (own_file or _files.snapshot_name(run_at, run_id))
    history_files = _dated_history_files(history_parquet or [])
    tables: dict[str, Any] = dict(
        run_id=run_id, run_at=run_at.astimezone(UTC), member_activity=member_activity, history_files=history_files,
        drift=drift, pipeline_runs=pipeline_runs, whop_access=whop_access, webhook_failures=webhook_failures,
        webhook_deliveries=webhook_deliveries, pipeline_run_companies=pipeline_run_companies,
    )  # fmt: skip
    events_files = list(events_parquet) if events_parquet is not None else None
    with _storage_errors(final):
        snapshots_dir.mkdir(parents=True, exist_ok=True)
        with _files.writer_lock(snapshots_dir):
            _files.remove_stray_tmp(snapshots_dir)
            previous = usable_previous(snapshots_dir, lineage) if own_file is None else None
            if previous is None or not _update_and_swap(final, previous, lineage, **tables):
                _build_and_swap(final, events=events, events_parquet=events_files, **tables)
            if own_file is None:  # a backdated run's own file is never latest.duckdb
                _files.point_latest_at(final)
                if lineage is not None:  # a record that names another file is never used (the writer checks)
                    write_record(snapshots_dir, final, lineage, history_versions(history_files))
                _files.apply_retention(snapshots_dir, keep=keep, protect=final)
    return final


@contextmanager
def _storage_errors(final: Path) -> Iterator[None]:
    """A disk that cannot take the snapshot is a transient failure: the next run writes it."""
    try:
        yield
    except StorageUnavailable:
        raise
    except duckdb.Error as exc:  # IOException; a full disk mid-checkpoint is a FatalException
        if isinstance(exc, duckdb.IOException) or disk_full(exc):
            raise StorageUnavailable(
                f"could not write the snapshot {final}: {str(exc).strip().splitlines()[0]}",
                hint="check free disk space",
            ) from exc
        raise
    except OSError as exc:
        raise StorageUnavailable(
            f"could not write the snapshot {final}: {exc.strerror or exc}", hint="check free disk space"
        ) from exc


def _check_inputs(
    *,
    keep: int,
    events: pl.DataFrame | None,
    events_parquet: Sequence[Path] | None,
    member_activity: pl.DataFrame,
    drift: pl.DataFrame,
    pipeline_runs: pl.DataFrame,
) -> None:
    if keep < 1:
        raise InvalidInput("keep must be at least 1", value=keep, hint="set MEMBERPULSE_SNAPSHOTS_KEEP >= 1")
    if events is not None and events_parquet is not None:
        raise InvalidInput("pass events either as a frame or as parquet files, not both", value="events")
    _check_columns("member_activity", member_activity.columns, MEMBER_ACTIVITY_REQUIRED)
    for name, frame in (("reconciliation_drift", drift), ("pipeline_runs", pipeline_runs)):
        if not frame.columns:
            raise InvalidInput(f"{name} has no columns", value=name, hint="pass an empty frame with its schema")


def _build_and_swap(final: Path, **tables: Any) -> None:
    """Build the snapshot in a tmp file beside ``final``, then rename it into place (the tmp never lingers)."""
    tmp = _files.tmp_path_for(final)
    try:
        _build(tmp, **tables)
        checkpoint("snapshot_before_swap")
        _files.publish(tmp, final)
    finally:
        _files.discard(tmp)


def _update_and_swap(final: Path, previous: PreviousBuild, lineage: SnapshotLineage | None, **tables: Any) -> bool:
    """Update a copy of the previous snapshot and rename it into place; False (nothing swapped) when the
    copy cannot be brought up to date, so the caller builds from scratch."""
    assert lineage is not None
    tmp = _files.tmp_path_for(final)
    try:
        copy_for_update(previous.path, tmp)
        try:
            _update(tmp, previous.record, lineage, **tables)
        except (duckdb.Error, _NotIncremental):
            return False
        checkpoint("snapshot_before_swap")
        _files.publish(tmp, final)
        return True
    finally:
        _files.discard(tmp)


class _NotIncremental(Exception):
    """The previous snapshot cannot be updated to this run's (e.g. a history file without a date)."""


def _update(
    path: Path,
    record: SnapshotBuild,
    lineage: SnapshotLineage,
    *,
    run_id: str,
    run_at: datetime,
    member_activity: pl.DataFrame,
    history_files: list[tuple[Path, datetime | None]],
    drift: pl.DataFrame,
    pipeline_runs: pl.DataFrame,
    whop_access: WhopAccess,
    webhook_failures: pl.DataFrame | None,
    webhook_deliveries: pl.DataFrame | None,
    pipeline_run_companies: pl.DataFrame | None,
) -> None:
    con = duckdb.connect(str(path), config={"storage_compatibility_version": STORAGE_COMPATIBILITY})
    try:
        con.execute("SET TimeZone = 'UTC'")
        _require_current_layout(con)
        con.execute("BEGIN TRANSACTION")
        if record.events_token != lineage.events_token and lineage.new_events is not None:
            _append_events(con, lineage.new_events)
        if record.members_version != lineage.members_version and lineage.changed_members is not None:
            _replace_members(con, member_activity, lineage.changed_members)
        _update_history(con, record.history, history_files)
        for table in _REBUILT_EVERY_RUN:
            con.execute(f"DROP TABLE IF EXISTS {table}")  # IF EXISTS: one a previous release did not write
        _load("reconciliation_drift", lambda: _load_declared(con, RECONCILIATION_DRIFT, drift))
        _load_frame(con, "pipeline_runs", pipeline_runs)
        _load("webhook_failures", lambda: _load_declared(con, WEBHOOK_FAILURES, webhook_failures))
        _load("webhook_deliveries", lambda: _load_declared(con, WEBHOOK_DELIVERIES, webhook_deliveries))
        _load(PIPELINE_RUN_COMPANIES.name, lambda: _load_declared(con, PIPELINE_RUN_COMPANIES, pipeline_run_companies))
        _load_info(con, run_id, run_at)
        if record.whop_access_source != lineage.whop_access_source or lineage.whop_access_source is None:
            con.execute("DROP TABLE whop_member_access")
            _load("whop_member_access", lambda: _load_whop_access(con, whop_access))
        _create_views(con)  # this memberpulse's definitions, whichever wrote the previous file
        comment_snapshot(con)  # the tables made anew carry their descriptions again
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
    finally:
        con.close()


# The small tables an incremental update recreates in full (the big ones are patched).
_REBUILT_EVERY_RUN = (
    "reconciliation_drift", "pipeline_runs", "webhook_failures", "webhook_deliveries", "snapshot_info",
    "pipeline_run_companies",
)  # fmt: skip
# Tables an update may keep as they are in the previous file, whose columns are declared.
_KEPT_AS_DECLARED = (MEMBER_ACTIVITY, WHOP_MEMBER_ACCESS)


def _require_current_layout(con: duckdb.DuckDBPyConnection) -> None:
    """A previous file written by a memberpulse that declared fewer columns (before ``company_id`` on
    ``whop_member_access``, say) is not patched: the snapshot is built anew, in this release's layout."""
    present = set(
        con.execute(
            "SELECT table_name, column_name FROM duckdb_columns()"
            " WHERE database_name = current_database() AND schema_name = 'main'"
        ).fetchall()
    )
    for table in _KEPT_AS_DECLARED:
        if any((table.name, column) not in present for column in table.names):
            raise _NotIncremental(f"{table.name} of the previous snapshot lacks a column this release declares")


def _create_views(con: duckdb.DuckDBPyConnection) -> None:
    for name, sql in {**VIEWS, **ANALYST_VIEWS}.items():
        con.execute(f"CREATE OR REPLACE VIEW {quote_ident(name)} AS {sql}")


def _append_events(con: duckdb.DuckDBPyConnection, events: pl.DataFrame) -> None:
    """The run's new events (the ingest already dropped webhook ids the log held, so no duplicates arise)."""
    if events.height == 0:
        return
    con.register("_events_new", events)
    con.execute("INSERT INTO events BY NAME SELECT * FROM _events_new")
    con.unregister("_events_new")


def _replace_members(con: duckdb.DuckDBPyConnection, member_activity: pl.DataFrame, keys: pl.Series) -> None:
    if keys.len() == 0:
        return
    con.register("_changed_keys", pl.DataFrame({"membership_id": keys.cast(pl.Utf8)}))
    con.execute("DELETE FROM member_activity WHERE membership_id IN (SELECT membership_id FROM _changed_keys)")
    con.unregister("_changed_keys")
    rows = member_activity.filter(pl.col("membership_id").is_in(keys.implode()))
    _insert_member_activity(con, rows)


def _update_history(
    con: duckdb.DuckDBPyConnection, before: dict[str, str | None], files: list[tuple[Path, datetime | None]]
) -> None:
    now = history_versions(files)
    gone = [name for name, version in before.items() if now.get(name) != version]
    added = [(p, when) for p, when in files if before.get(p.name) != now[p.name]]
    if any(history_file_time(Path(name)) is None for name in gone) or any(when is None for _, when in added):
        raise _NotIncremental("history files without a run time in their name")
    if gone:
        times = pl.DataFrame({"run_at": [history_file_time(Path(n)) for n in gone]}, schema={"run_at": UTC_US})
        con.register("_gone_runs", times)
        con.execute("DELETE FROM member_activity_history WHERE run_at IN (SELECT run_at FROM _gone_runs)")
        con.unregister("_gone_runs")
    if added:
        _load("member_activity_history", lambda: _load_history(con, added, create=False))


def _build(
    path: Path,
    *,
    run_id: str,
    run_at: datetime,
    member_activity: pl.DataFrame,
    events: pl.DataFrame | None,
    events_parquet: list[Path] | None,
    history_files: list[tuple[Path, datetime | None]],
    drift: pl.DataFrame,
    pipeline_runs: pl.DataFrame,
    whop_access: WhopAccess = None,
    webhook_failures: pl.DataFrame | None = None,
    webhook_deliveries: pl.DataFrame | None = None,
    pipeline_run_companies: pl.DataFrame | None = None,
) -> None:
    con = duckdb.connect(str(path), config={"storage_compatibility_version": STORAGE_COMPATIBILITY})
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("BEGIN TRANSACTION")
        _load("member_activity", lambda: _load_member_activity(con, member_activity))
        _load("events", lambda: _load_events(con, events, events_parquet))
        _load("member_activity_history", lambda: _load_history(con, history_files))
        _load("reconciliation_drift", lambda: _load_declared(con, RECONCILIATION_DRIFT, drift))
        _load("pipeline_runs", lambda: _load_frame(con, "pipeline_runs", pipeline_runs))
        _load("webhook_failures", lambda: _load_declared(con, WEBHOOK_FAILURES, webhook_failures))
        _load("webhook_deliveries", lambda: _load_declared(con, WEBHOOK_DELIVERIES, webhook_deliveries))
        _load_info(con, run_id, run_at)
        _load("whop_member_access", lambda: _load_whop_access(con, whop_access))
        _load(PIPELINE_RUN_COMPANIES.name, lambda: _load_declared(con, PIPELINE_RUN_COMPANIES, pipeline_run_companies))
        _create_views(con)
        comment_snapshot(con)
        con.execute("COMMIT")
        # Everything into the main file now, so the closed file stands alone with no .wal beside it.
        con.execute("CHECKPOINT")
    finally:
        con.close()


def _load_info(con: duckdb.DuckDBPyConnection, run_id: str, run_at: datetime) -> None:
    con.execute(f"CREATE TABLE snapshot_info ({SNAPSHOT_INFO.duckdb_columns()})")
    con.execute(
        "INSERT INTO snapshot_info VALUES (?, ?, ?, ?)", [run_id, run_at, datetime.now(UTC), _package_version()]
    )


def _load(table: str, load: Callable[[], None]) -> None:
    try:
        load()
    except (
        duckdb.ConversionException,
        duckdb.BinderException,
        duckdb.InvalidInputException,
        duckdb.ConstraintException,
    ) as exc:
        raise InvalidInput(f"cannot load {table} into the snapshot: {exc}", value=table) from exc


def _load_member_activity(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame) -> None:
    con.execute(f"CREATE TABLE member_activity ({MEMBER_ACTIVITY.duckdb_columns()})")
    _insert_member_activity(con, frame)


def _insert_member_activity(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame) -> None:
    present = set(frame.columns)
    select = []
    for column in MEMBER_ACTIVITY.columns:
        source = column.name if column.name in present else "engagement_score"  # activity_score mirrors it
        select.append(f"CAST({quote_ident(source)} AS {column.duckdb_type})")
    # Registered frames are dropped on success only: after a failure the transaction is aborted and the
    # connection is thrown away anyway.
    con.register("_member_activity_in", frame)
    con.execute(f"INSERT INTO member_activity SELECT {', '.join(select)} FROM _member_activity_in")
    con.unregister("_member_activity_in")


def _load_events(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame | None, files: list[Path] | None) -> None:
    params: dict[str, object] = {}
    if files:
        source, params = "read_parquet($files, union_by_name = true)", {"files": [str(p) for p in files]}
    else:
        # No events yet still gets the parsed-event columns, so analysts' queries bind on a fresh install.
        con.register("_events_in", frame if frame is not None and frame.columns else _empty_events())
        source = "_events_in"
    columns = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}", params).fetchall()]
    # Whop delivers at least once and the event log keeps each run's batch, so a webhook redelivered across
    # runs sits in two files; analysts count it once (the earliest arrival).
    dedupe = ""
    if "webhook_id" in columns:
        order = " ORDER BY received_at" if "received_at" in columns else ""
        dedupe = f" QUALIFY row_number() OVER (PARTITION BY webhook_id{order}) = 1"
    con.execute(f"CREATE TABLE events AS SELECT * FROM {source}{dedupe}", params)
    if not files:
        con.unregister("_events_in")


def _empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema=transforms.EVENT_SCHEMA)


def _load_history(
    con: duckdb.DuckDBPyConnection, files: list[tuple[Path, datetime | None]], *, create: bool = True
) -> None:
    if not files and create:
        con.execute(f"CREATE TABLE member_activity_history ({MEMBER_ACTIVITY_HISTORY.duckdb_columns()})")
        return
    params = {"files": [str(p) for p, _ in files]}
    source = "read_parquet($files, union_by_name = true, filename = '_mp_source_file') AS h"
    columns = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}", params).fetchall()]
    _check_columns("member_activity_history", columns, HISTORY_REQUIRED)
    if "run_at" in columns:
        run_at = "CAST(h.run_at AS TIMESTAMPTZ)"
    else:
        undated = [str(p) for p, when in files if when is None]
        if undated:
            raise InvalidInput(
                "history files need a run_at column or a <YYYYMMDDTHHMMSSffffffZ>.parquet name",
                value=undated[:3],
            )
        dates = pl.DataFrame(
            {"_mp_source_file": [str(p) for p, _ in files], "_mp_run_at": [when for _, when in files]},
            schema={"_mp_source_file": pl.Utf8, "_mp_run_at": UTC_US},
        )
        con.register("_history_dates", dates)
        run_at = "d._mp_run_at"
        source += " JOIN _history_dates AS d USING (_mp_source_file)"
    rest = ", ".join(f"h.{quote_ident(c)}" for c in columns if c not in ("run_at", "_mp_source_file"))
    into = "CREATE TABLE member_activity_history AS" if create else "INSERT INTO member_activity_history BY NAME"
    con.execute(f"{into} SELECT {run_at} AS run_at, {rest} FROM {source}", params)
    if "run_at" not in columns:
        con.unregister("_history_dates")
    if create:  # a declared column no file holds (updated_at: runs score, they do not stamp) is there, null
        held = {row[0] for row in con.execute("DESCRIBE member_activity_history").fetchall()}
        for column in MEMBER_ACTIVITY_HISTORY.columns:
            if column.name not in held:
                con.execute(
                    f"ALTER TABLE member_activity_history ADD COLUMN {quote_ident(column.name)} {column.duckdb_type}"
                )


def _load_whop_access(con: duckdb.DuckDBPyConnection, source: WhopAccess) -> None:
    con.execute(f"CREATE TABLE whop_member_access ({WHOP_MEMBER_ACCESS.duckdb_columns()})")
    frame = source() if callable(source) else source
    if frame is None:
        return
    _check_columns("whop_member_access", frame.columns, frozenset({"membership_id", "last_accessed_at"}))
    present = set(frame.columns)
    select = [
        f"CAST({quote_ident(c.name) if c.name in present else 'NULL'} AS {c.duckdb_type})"
        for c in WHOP_MEMBER_ACCESS.columns
    ]
    con.register("_whop_access_in", frame)
    con.execute(f"INSERT INTO whop_member_access SELECT {', '.join(select)} FROM _whop_access_in")
    con.unregister("_whop_access_in")


def _load_frame(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    view = f"_{table}_in"
    con.register(view, frame)
    con.execute(f"CREATE TABLE {quote_ident(table)} AS SELECT * FROM {quote_ident(view)}")
    con.unregister(view)


def _load_declared(con: duckdb.DuckDBPyConnection, table: Table, frame: pl.DataFrame | None) -> None:
    """A table with its declared column types, filled from the columns of ``frame`` it declares (None: left
    empty; a declared column the frame lacks, e.g. webhook_failures' ``recorded_at``, stays NULL)."""
    con.execute(f"CREATE TABLE {quote_ident(table.name)} ({table.duckdb_columns()})")
    if frame is not None and frame.height:
        view = f"_{table.name}_in"
        names = ", ".join(quote_ident(c.name) for c in table.columns if c.name in frame.columns)
        con.register(view, frame)
        con.execute(f"INSERT INTO {quote_ident(table.name)} ({names}) SELECT {names} FROM {quote_ident(view)}")
        con.unregister(view)


def _dated_history_files(paths: Sequence[Path]) -> list[tuple[Path, datetime | None]]:
    dated = []
    for path in paths:
        # The reconcile store names history files by the run's time; a file without a run_at column is dated by it.
        dated.append((Path(path).resolve(), history_file_time(path)))
    # Oldest run first, so the table is stored in time order (tight zone maps for filters on run_at).
    return sorted(dated, key=lambda item: (item[1] is not None, item[1] or datetime.min.replace(tzinfo=UTC)))


def _check_columns(table: str, columns: Sequence[str], required: frozenset[str]) -> None:
    missing = sorted(required - set(columns))
    if missing:
        raise InvalidInput(
            f"{table} is missing column(s) {', '.join(missing)}",
            value=missing,
            hint=f"{table} must carry {', '.join(sorted(required))}",
        )


def _package_version() -> str:
    try:
        return version("memberpulse")
    except PackageNotFoundError:  # running from a source tree without an install
        return "unknown"


__all__ = ["write_snapshot"]
