"""The fast path (``SUPABASE_DB_URL``): COPY into a temporary staging table, one upsert, one transaction.

Either the whole batch of changed rows is in ``member_activity`` or none of it is: the staging table is
``ON COMMIT DROP`` and the ``INSERT … ON CONFLICT`` runs in the same transaction as the COPY. The upsert's
``WHERE … IS DISTINCT FROM`` skips rows whose data the table already holds, so their ``updated_at`` stays
(a repair compares ``updated_at`` too: the table then ends exactly as the published state).

Every connection is guarded (``_connection``): TCP keepalives and user timeout, and a deadline on every wait, so
a network partition ends the attempt instead of holding the run.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any, Final

import polars as pl
import psycopg
from psycopg import sql

from memberpulse.contracts.checkpoints import checkpoint
from memberpulse.contracts.times import UTC_US
from memberpulse.errors import PublishUnavailable
from memberpulse.flows.publish._changes import PublishedState
from memberpulse.flows.publish._connection import GuardedConnection, tcp_options
from memberpulse.flows.publish._deadline import DEADLINE_HINT
from memberpulse.flows.publish._dsn import mask_dsn, translate_error
from memberpulse.flows.publish._fingerprint import POSTGRES_FINGERPRINT, Fingerprint, from_counts
from memberpulse.flows.publish._publisher import DEFAULT_PUBLISH_CONFIG, PublishConfig, Publisher, Written
from memberpulse.flows.publish._schema import (
    COMPARED_COLUMNS,
    KEY,
    MEMBER_ACTIVITY_COLUMNS,
    PIPELINE_RUN_COLUMNS,
    WEBHOOK_FAILURE_COLUMNS,
)

STAGE: Final = "member_activity_stage"
SET_LOCAL_TIMEOUTS: Final = "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)"
_COPY_CHUNK_ROWS: Final = 100_000
_CSV_NULL: Final = r"\N"


def _ident_list(columns: tuple[str, ...], prefix: str | None = None) -> sql.Composable:
    if prefix is None:
        return sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    return sql.SQL(", ").join(sql.Identifier(prefix, c) for c in columns)


_COLUMNS = _ident_list(MEMBER_ACTIVITY_COLUMNS)
CREATE_STAGE: Final = sql.SQL(
    "CREATE TEMPORARY TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM public.member_activity WITH NO DATA"
).format(stage=sql.Identifier(STAGE), cols=_COLUMNS)
COPY_STAGE: Final = sql.SQL("COPY {stage} ({cols}) FROM STDIN WITH (FORMAT csv, NULL {null})").format(
    stage=sql.Identifier(STAGE), cols=_COLUMNS, null=sql.Literal(_CSV_NULL)
)


def _upsert_from_stage(compared: tuple[str, ...]) -> sql.Composed:
    """Insert the staged rows, and update those whose ``compared`` columns differ; (inserted, updated)."""
    return sql.SQL(
        """
        WITH upserted AS (
            INSERT INTO public.member_activity AS t ({cols})
            SELECT {cols} FROM {stage}
            ON CONFLICT ({key}) DO UPDATE SET {assignments}
            WHERE ({current}) IS DISTINCT FROM ({incoming})
            RETURNING (t.xmax = 0) AS inserted
        )
        SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted
        """
    ).format(
        cols=_COLUMNS,
        stage=sql.Identifier(STAGE),
        key=sql.Identifier(KEY),
        assignments=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in MEMBER_ACTIVITY_COLUMNS if c != KEY
        ),
        current=_ident_list(compared, "t"),
        incoming=_ident_list(compared, "excluded"),
    )


UPSERT_FROM_STAGE: Final = _upsert_from_stage(COMPARED_COLUMNS)
# A repair leaves every row exactly as published: a row differing only in updated_at is written too.
UPSERT_EXACTLY_FROM_STAGE: Final = _upsert_from_stage(tuple(c for c in MEMBER_ACTIVITY_COLUMNS if c != KEY))
KEPT_IN_TABLE: Final = sql.SQL(
    "SELECT s.{key}, t.updated_at FROM {stage} s JOIN public.member_activity t USING ({key})"
    " WHERE t.updated_at IS DISTINCT FROM s.updated_at"
).format(key=sql.Identifier(KEY), stage=sql.Identifier(STAGE))
KEPT_SCHEMA: Final = {KEY: pl.Utf8(), "updated_at": UTC_US}
UPSERT_RUN: Final = sql.SQL(
    "INSERT INTO public.pipeline_runs ({cols}) VALUES ({values}) ON CONFLICT (run_id) DO UPDATE SET {assignments}"
).format(
    cols=_ident_list(PIPELINE_RUN_COLUMNS),
    values=sql.SQL(", ").join(sql.Placeholder(c) for c in PIPELINE_RUN_COLUMNS),
    assignments=sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in PIPELINE_RUN_COLUMNS if c != "run_id"
    ),
)
UPSERT_FAILURE: Final = sql.SQL(
    """
    INSERT INTO public.webhook_failures ({cols}) VALUES ({values})
    ON CONFLICT (webhook_id, reason) DO UPDATE SET
        event_type = coalesce(EXCLUDED.event_type, webhook_failures.event_type),
        body_prefix = coalesce(EXCLUDED.body_prefix, webhook_failures.body_prefix),
        company_id = coalesce(EXCLUDED.company_id, webhook_failures.company_id),
        first_seen = least(webhook_failures.first_seen, EXCLUDED.first_seen),
        last_seen = greatest(webhook_failures.last_seen, EXCLUDED.last_seen),
        recorded_at = now()
    """
).format(
    cols=_ident_list(WEBHOOK_FAILURE_COLUMNS),
    values=sql.SQL(", ").join(sql.Placeholder(c) for c in WEBHOOK_FAILURE_COLUMNS),
)


def csv_chunks(frame: pl.DataFrame, chunk_rows: int = _COPY_CHUNK_ROWS) -> Iterator[bytes]:
    """``frame`` as COPY CSV: strings quoted (so an empty string is not NULL), NULL as unquoted ``\\N``."""
    for offset in range(0, frame.height, chunk_rows):
        buffer = io.BytesIO()
        frame.slice(offset, chunk_rows).write_csv(
            buffer,
            include_header=False,
            null_value=_CSV_NULL,
            quote_style="non_numeric",
            datetime_format="%Y-%m-%dT%H:%M:%S%.6f%:z",
        )
        yield buffer.getvalue()


class PostgresPublisher(Publisher):
    """Publishes through a direct Postgres connection (Supabase: the database's connection string)."""

    target = "postgres"
    digests = True

    def __init__(
        self,
        dsn: str,
        *,
        state: PublishedState,
        config: PublishConfig = DEFAULT_PUBLISH_CONFIG,
        after_copy: Callable[[], None] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"sleep": sleep} if sleep else {}
        super().__init__(state=state, config=config, **kwargs)
        self._where = mask_dsn(dsn)  # validates the DSN up front, without echoing it
        self._dsn = dsn
        # Server-side bounds on every statement of every publish transaction (SET LOCAL): a held lock or a
        # slow statement fails the attempt instead of holding the run (and its lock) for as long as it lasts.
        # Postgres counts whole milliseconds and reads 0 as "no limit": a setting shorter than one unit means
        # the shortest limit, never none (a unit conversion, not a bound).
        self._timeouts = (f"{max(1, round(config.statement_timeout_seconds * 1000))}ms",
                          f"{max(1, round(config.lock_timeout_seconds * 1000))}ms")  # fmt: skip
        self._tcp = tcp_options(config.timeout_seconds)
        # Client-side, one wait for the server may take as long as a statement may run plus the connect timeout:
        # longer, and the server is not getting our bytes (or we are not getting its answer).
        self._window = config.statement_timeout_seconds + config.timeout_seconds
        # Test seam: runs inside the open transaction, after COPY and before the upsert and commit.
        self._after_copy = after_copy

    def describe(self) -> str:
        return f"Postgres {self._where}"

    def _connect(self, action: str) -> GuardedConnection:
        """A guarded connection; connecting takes at most the connect timeout, or what is left of the deadline.
        (libpq counts whole seconds and reads 0 as "no limit": at least one, a unit conversion.)"""
        if self._deadline.passed():
            raise self._deadline.unavailable(action, self._where)
        timeout = max(1, round(self._deadline.within(self.config.timeout_seconds)))
        conn = GuardedConnection.connect(
            self._dsn, connect_timeout=timeout, application_name="memberpulse-publish", **self._tcp
        )
        conn.guard(self._deadline, self._window)
        return conn

    def _transaction(self, action: str, work: Callable[[psycopg.Cursor[Any]], Any]) -> Any:
        """Run ``work`` in one transaction (commit on success, rollback on any error), errors translated.

        Every statement in it is bounded by the statement and lock timeouts, every wait for the server by the
        client's deadlines; connecting by the connect timeout. Transient failures are retried here,
        ``max_attempts`` in all (the only retry layer), while the publish deadline allows."""

        def attempt() -> Any:
            conn: GuardedConnection | None = None
            try:
                conn = self._connect(action)
                with conn, conn.cursor() as cur:
                    cur.execute(SET_LOCAL_TIMEOUTS, self._timeouts)
                    return work(cur)
            except psycopg.Error as exc:
                if conn is not None and conn.stalled is not None:
                    hint = DEADLINE_HINT if self._deadline.passed() else None
                    raise PublishUnavailable(f"{action} at {self._where}: {conn.stalled}", hint=hint) from None
                raise translate_error(exc, dsn=self._dsn, action=action) from None

        return self._with_retries(action, attempt)

    def _target_fingerprint(self) -> Fingerprint:
        def work(cur: psycopg.Cursor[Any]) -> Fingerprint:
            cur.execute(POSTGRES_FINGERPRINT)
            row = cur.fetchone()
            assert row is not None
            return from_counts(*row)

        result: Fingerprint = self._transaction("checking member_activity", work)
        return result

    def _upsert_members(self, changed: pl.DataFrame, *, seen_before: int, exact: bool = False) -> Written:
        frame = changed.select(MEMBER_ACTIVITY_COLUMNS)
        upsert = UPSERT_EXACTLY_FROM_STAGE if exact else UPSERT_FROM_STAGE

        def work(cur: psycopg.Cursor[Any]) -> Written:
            cur.execute(CREATE_STAGE)
            with cur.copy(COPY_STAGE) as copy:
                for chunk in csv_chunks(frame):
                    copy.write(chunk)
            if self._after_copy is not None:
                self._after_copy()
            checkpoint("publish_before_commit")
            cur.execute(upsert)
            row = cur.fetchone()
            assert row is not None
            inserted, updated = int(row[0]), int(row[1])
            kept = None
            if inserted + updated < frame.height:  # the table already held some rows: keep their updated_at
                cur.execute(KEPT_IN_TABLE)
                kept = pl.DataFrame(cur.fetchall(), schema=KEPT_SCHEMA, orient="row")
            return Written(inserted, updated, kept)

        result: Written = self._transaction("publishing member_activity", work)
        return result

    def _upsert_runs(self, rows: list[dict[str, Any]]) -> None:
        self._transaction("recording pipeline_runs", lambda cur: cur.executemany(UPSERT_RUN, rows))

    def _upsert_failures(self, summary: pl.DataFrame) -> None:
        rows = summary.to_dicts()
        self._transaction("recording webhook_failures", lambda cur: cur.executemany(UPSERT_FAILURE, rows))
