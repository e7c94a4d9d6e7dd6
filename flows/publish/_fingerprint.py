"""Whether a target still holds what was published, in one cheap query: the row count and an order-free digest
of every published column, computed alike in SQL on the target and over the published rows here (DuckDB).

A row's digest is the first 60 bits of the md5 of a canonical text of its published columns: text with its byte
length in front (no value can pass for another), times as microseconds since the epoch, booleans as 0/1, NULL
as ``~``. The table's digest is the sum of its rows' digests modulo 2**64: no sort is needed, and the digests of
two sets of rows add up, so rows someone else put in the target can be set aside (``Fingerprint.minus``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import duckdb
import polars as pl
from psycopg import sql

from memberpulse.flows.publish._schema import MEMBER_ACTIVITY_COLUMNS, MEMBER_ACTIVITY_SCHEMA

_MODULUS: Final = 2**64
_NULL: Final = "'~'"


@dataclass(frozen=True)
class Fingerprint:
    """``rows`` and ``digest`` of a set of member rows; ``digest`` None where only rows can be counted."""

    rows: int
    digest: int | None = None

    def agrees(self, other: Fingerprint) -> bool:
        """Equal counts, and equal digests where both are known."""
        if self.rows != other.rows:
            return False
        return self.digest is None or other.digest is None or self.digest == other.digest

    def plus(self, other: Fingerprint) -> Fingerprint:
        return Fingerprint(self.rows + other.rows, _combine(self.digest, other.digest, 1))

    def minus(self, other: Fingerprint) -> Fingerprint:
        return Fingerprint(self.rows - other.rows, _combine(self.digest, other.digest, -1))


def _combine(a: int | None, b: int | None, sign: int) -> int | None:
    return None if a is None or b is None else (a + sign * b) % _MODULUS


NOTHING: Final = Fingerprint(0, 0)


def _kind(dtype: pl.DataType) -> str:
    if dtype == pl.String:
        return "text"
    if dtype == pl.Boolean:
        return "bool"
    if isinstance(dtype, pl.Datetime):
        return "time"
    if dtype.is_integer():
        return "int"
    raise TypeError(f"no canonical text for {dtype}")  # a new column type: give it one here and in the SQL


# Each column's canonical text, per dialect ({c}: the quoted column). date_part() is a double (extract() is an
# exact but slower numeric from Postgres 14 on): whole seconds and microseconds are taken apart, and each part
# comes out exact for any time between the years 1700 and 2240 (the epoch's rounding error stays under 1 µs).
_POSTGRES: Final = {
    "text": "coalesce(octet_length({c})::text || ':' || {c}, " + _NULL + ")",
    "int": "coalesce({c}::text, " + _NULL + ")",
    "bool": "coalesce({c}::int::text, " + _NULL + ")",
    "time": "coalesce((floor(date_part('epoch', {c}))::bigint * 1000000"
    " + date_part('microseconds', {c})::bigint % 1000000)::text, " + _NULL + ")",
}
_DUCKDB: Final = {
    "text": "coalesce(strlen({c})::VARCHAR || ':' || {c}, " + _NULL + ")",
    "int": "coalesce({c}::VARCHAR, " + _NULL + ")",
    "bool": "coalesce({c}::INTEGER::VARCHAR, " + _NULL + ")",
    "time": "coalesce(epoch_us({c})::VARCHAR, " + _NULL + ")",
}


def _row_text(dialect: dict[str, str]) -> str:
    parts = (dialect[_kind(MEMBER_ACTIVITY_SCHEMA[c])].format(c=f'"{c}"') for c in MEMBER_ACTIVITY_COLUMNS)
    return f"concat_ws('|', {', '.join(parts)})"


#: One statement: (rows, sum of row digests) of the target's member_activity.
POSTGRES_FINGERPRINT: Final = sql.SQL(
    "SELECT count(*), coalesce(sum(('x' || left(md5(" + _row_text(_POSTGRES) + "), 15))::bit(60)::bigint), 0)"
    " FROM public.member_activity"
)
_DUCKDB_FINGERPRINT: Final = (
    "SELECT count(*), coalesce(sum(('0x' || left(md5(" + _row_text(_DUCKDB) + "), 15))::BIGINT), 0) FROM rows"
)


def from_counts(rows: object, total: object) -> Fingerprint:
    """A fingerprint from a query's (count, sum) answer."""
    return Fingerprint(int(str(rows)), int(str(total)) % _MODULUS)


def fingerprint_rows(frame: pl.DataFrame) -> Fingerprint:
    """The fingerprint of published rows held here (the columns of ``MEMBER_ACTIVITY_COLUMNS``)."""
    if frame.height == 0:
        return NOTHING
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")  # a bar on a large table would garble the run's stderr
        con.register("rows", frame.select(MEMBER_ACTIVITY_COLUMNS).to_arrow())
        answer = con.execute(_DUCKDB_FINGERPRINT).fetchone()
    assert answer is not None
    return from_counts(*answer)
