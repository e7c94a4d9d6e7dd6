"""The check before each publish compares a fingerprint computed in SQL on the target with one computed here by
DuckDB: the two must agree on any rows (or every run would re-send everything), and differ on any change."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memberpulse.flows.publish._fingerprint import (
    NOTHING,
    POSTGRES_FINGERPRINT,
    Fingerprint,
    fingerprint_rows,
    from_counts,
)
from memberpulse.flows.publish._schema import MEMBER_ACTIVITY_COLUMNS, MEMBER_ACTIVITY_SCHEMA
from tests.support.publish_data import T0, members


def _published(frame: pl.DataFrame) -> pl.DataFrame:
    stamped = frame.with_columns(pl.lit(T0).cast(MEMBER_ACTIVITY_SCHEMA["updated_at"]).alias("updated_at"))
    return stamped.select(MEMBER_ACTIVITY_COLUMNS).cast(MEMBER_ACTIVITY_SCHEMA)


def test_digests_of_disjoint_rows_add_up_and_come_apart() -> None:
    a, b = _published(members(5)), _published(members(3, start=5))
    both = fingerprint_rows(pl.concat([a, b]))
    assert both == fingerprint_rows(a).plus(fingerprint_rows(b))
    assert both.minus(fingerprint_rows(b)) == fingerprint_rows(a)
    assert fingerprint_rows(a.head(0)) == NOTHING
    assert fingerprint_rows(a.reverse()) == fingerprint_rows(a)  # order-free


def test_a_count_agrees_with_any_digest_of_as_many_rows() -> None:
    """PostgREST can only count: a count-only fingerprint is compared by its rows."""
    digested = fingerprint_rows(_published(members(4)))
    assert Fingerprint(4).agrees(digested) and digested.agrees(Fingerprint(4))
    assert not Fingerprint(3).agrees(digested)
    assert not digested.agrees(Fingerprint(4, (digested.digest or 0) + 1))


EDITS: dict[str, pl.Expr] = {
    "membership_id": pl.lit("mem_9999999"),
    "company_id": pl.lit(None, pl.String),
    "user_id": pl.lit(""),
    "member_name": pl.lit("Member 0|x"),
    "email": pl.col("email") + "m",
    "status": pl.lit("inactive"),
    "engagement_score": pl.lit(51, pl.Int32),
    "last_active": pl.col("last_active") + timedelta(microseconds=1),
    "joined_at": pl.lit(None, pl.Datetime("us", "UTC")),
    "total_sessions": pl.lit(1000, pl.Int32),
    "membership_status": pl.lit("canceled"),
    "valid": pl.lit(False),
    "updated_at": pl.col("updated_at") - timedelta(days=1),
}


@pytest.mark.parametrize("column", list(EDITS))
def test_a_change_to_any_published_column_of_one_row_changes_the_digest(column: str) -> None:
    assert set(EDITS) == set(MEMBER_ACTIVITY_COLUMNS)
    rows = _published(members(3))
    edited = pl.concat([rows.head(1).with_columns(EDITS[column].alias(column)), rows.tail(2)])
    assert fingerprint_rows(edited).rows == 3
    assert fingerprint_rows(edited) != fingerprint_rows(rows)


# --- the same on a real PostgreSQL -------------------------------------------------------------------------------

_TEXT = st.one_of(st.none(), st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=12))
_TIME = st.datetimes(min_value=datetime(1800, 1, 1), max_value=datetime(2200, 1, 1)).map(
    lambda t: t.replace(tzinfo=UTC)
)


@st.composite
def _member_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    ids = draw(st.lists(st.text(min_size=1, max_size=8).filter(lambda t: "\x00" not in t), max_size=8, unique=True))
    return [
        {
            "membership_id": key,
            "company_id": draw(_TEXT), "user_id": draw(_TEXT), "member_name": draw(_TEXT), "email": draw(_TEXT),
            "status": draw(st.sampled_from(["active", "at_risk", "inactive"])),
            "engagement_score": draw(st.integers(0, 100)),
            "last_active": draw(st.one_of(st.none(), _TIME)), "joined_at": draw(st.one_of(st.none(), _TIME)),
            "total_sessions": draw(st.integers(0, 2**31 - 1)),
            "membership_status": draw(_TEXT),
            "valid": draw(st.booleans()),
            "updated_at": draw(_TIME),
        }
        for key in ids
    ]  # fmt: skip


@pytest.fixture
def target(migrated_postgres_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_postgres_dsn, autocommit=True) as conn:
        yield conn


@pytest.mark.slow  # a real PostgreSQL
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_member_rows())
def test_the_target_digests_any_rows_exactly_as_they_are_digested_here(
    target: psycopg.Connection[Any], rows: list[dict[str, Any]]
) -> None:
    target.execute("TRUNCATE member_activity")
    columns = ", ".join(MEMBER_ACTIVITY_COLUMNS)
    with target.cursor() as cur, cur.copy(f"COPY member_activity ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[c] for c in MEMBER_ACTIVITY_COLUMNS])
    answer = target.execute(POSTGRES_FINGERPRINT).fetchone()
    assert answer is not None
    frame = pl.DataFrame(rows, schema=MEMBER_ACTIVITY_SCHEMA)
    assert from_counts(*answer) == fingerprint_rows(frame)
