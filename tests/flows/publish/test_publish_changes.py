"""Only changed rows: the pure diff against the last published rows, and the warehouse state file."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memberpulse.errors import InvalidInput
from memberpulse.flows.publish import PublishedState, as_published, diff_published
from tests.support.publish_data import T0, members

T1, T2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)


def test_first_publish_sends_everything_stamped_with_run_at() -> None:
    changed = diff_published(members(3), None, run_at=T1)
    assert changed["membership_id"].to_list() == ["mem_0000000", "mem_0000001", "mem_0000002"]
    assert changed["updated_at"].to_list() == [T1] * 3


def test_only_rows_whose_published_columns_differ_are_sent() -> None:
    last = as_published(members(4), None, run_at=T1)
    current = members(4).with_columns(
        email=pl.when(pl.col("membership_id") == "mem_0000001").then(None).otherwise(pl.col("email")),
        member_name=pl.when(pl.col("membership_id") == "mem_0000003").then(pl.lit("Renamed")).otherwise("member_name"),
    )
    changed = diff_published(current, last, run_at=T2)
    assert changed["membership_id"].to_list() == ["mem_0000001", "mem_0000003"]
    assert diff_published(current, as_published(current, last, run_at=T2), run_at=T2).height == 0


def test_nulls_equal_nulls_and_updated_at_alone_is_no_change() -> None:
    current = members(2).with_columns(email=pl.lit(None, pl.Utf8))
    last = as_published(current, None, run_at=T1).with_columns(updated_at=pl.lit(T0).cast(pl.Datetime("us", "UTC")))
    assert diff_published(current, last, run_at=T2).height == 0


def test_as_published_keeps_updated_at_of_unchanged_rows_and_rows_no_longer_scored() -> None:
    last = as_published(members(3), None, run_at=T1)
    current = members(2, start=1).with_columns(engagement_score=pl.Series([50, 10], dtype=pl.Int32))
    frame = as_published(current, last, run_at=T2)
    assert frame.select("membership_id", "engagement_score", "updated_at").rows() == [
        ("mem_0000000", 50, T1),  # not in this run: kept as published
        ("mem_0000001", 50, T1),  # unchanged
        ("mem_0000002", 10, T2),  # changed
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "churned"}, "status outside"),
        ({"engagement_score": 101}, "engagement_score outside"),
        ({"membership_id": None}, "null membership_id"),
    ],
)
def test_rows_the_database_would_refuse_are_refused_up_front(change: dict[str, object], message: str) -> None:
    frame = members(2).with_columns(**{k: pl.lit(v) for k, v in change.items()})
    with pytest.raises(InvalidInput, match=message):
        diff_published(frame, None, run_at=T1)


def test_duplicate_keys_and_naive_times_are_refused() -> None:
    with pytest.raises(InvalidInput, match="repeat a membership_id"):
        diff_published(pl.concat([members(2), members(1)]), None, run_at=T1)
    with pytest.raises(InvalidInput, match="timezone-aware"):
        diff_published(members(1), None, run_at=datetime(2026, 1, 1))


def test_published_state_round_trips_and_replaces_atomically(tmp_path: Path) -> None:
    state = PublishedState(tmp_path)
    assert state.load() is None
    frame = as_published(members(3), None, run_at=T1)
    state.save(frame)
    assert state.path == tmp_path / "published" / "member_activity.parquet"
    loaded = state.load()
    assert loaded is not None and loaded.equals(frame)
    state.save(as_published(members(1), None, run_at=T2))
    assert [p.name for p in state.path.parent.iterdir()] == ["member_activity.parquet"]  # no tmp files left


@settings(max_examples=40, deadline=None)
@given(
    scores=st.lists(st.integers(0, 100), min_size=1, max_size=12),
    new_scores=st.lists(st.integers(0, 100), min_size=1, max_size=12),
)
def test_publishing_the_diff_converges(scores: list[int], new_scores: list[int]) -> None:
    first = members(len(scores)).with_columns(engagement_score=pl.Series(scores, dtype=pl.Int32))
    second = members(len(new_scores)).with_columns(engagement_score=pl.Series(new_scores, dtype=pl.Int32))
    last = as_published(first, None, run_at=T1)
    changed = diff_published(second, last, run_at=T2)
    now = as_published(second, last, run_at=T2)
    expected_changed = {f"mem_{i:07d}" for i, s in enumerate(new_scores) if i >= len(scores) or scores[i] != s}
    assert set(changed["membership_id"]) == expected_changed
    assert now.height == max(len(scores), len(new_scores))
    # Publishing the diff onto the last state gives the new state: a second diff finds nothing.
    assert diff_published(second, now, run_at=T2 + timedelta(hours=1)).height == 0


def test_unknown_validity_is_published_as_not_valid_and_missing_sessions_as_zero() -> None:
    frame = members(2).with_columns(valid=pl.lit(None, pl.Boolean), total_sessions=pl.lit(None, pl.Int32))
    changed = diff_published(frame, None, run_at=T1)
    assert changed["valid"].to_list() == [False, False]
    assert changed["total_sessions"].to_list() == [0, 0]
