"""The analysts' views (cohort retention, status transitions, access-time disagreements) on real DuckDB files
written by the snapshot writer from small, hand-made data whose answers are worked out here row by row."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from memberpulse.flows.snapshot import VIEW_COLUMNS, open_latest, write_snapshot
from memberpulse.transforms import EVENT_SCHEMA

TS = pl.Datetime("us", "UTC")
RUN_AT = datetime(2026, 11, 18, 12, tzinfo=UTC)  # a Wednesday; its ISO week starts Monday 2026-11-16
W0 = datetime(2026, 11, 2, 10, tzinfo=UTC)  # Monday two weeks earlier


def _members(rows: list[dict[str, Any]]) -> pl.DataFrame:
    base = {
        "company_id": "biz_1",
        "user_id": None,
        "member_name": None,
        "email": None,
        "status": "active",
        "engagement_score": 50,
        "activity_score": 50,
        "last_active": None,
        "total_sessions": 1,
        "membership_status": "active",
        "valid": True,
        "updated_at": RUN_AT,
    }
    frame = pl.DataFrame([{**base, **row} for row in rows], infer_schema_length=None)
    return frame.with_columns(pl.col("joined_at", "last_active", "updated_at").cast(TS))


def _events(rows: list[tuple[str, str, datetime]]) -> pl.DataFrame:
    given = pl.DataFrame(
        {
            "webhook_id": [f"wh_{i}" for i in range(len(rows))],
            "received_at": [at for _, _, at in rows],
            "kind": [kind for _, kind, _ in rows],
            "event_at": [at for _, _, at in rows],
            "membership_id": [mid for mid, _, _ in rows],
        },
        schema={"webhook_id": pl.Utf8, "received_at": TS, "kind": pl.Utf8, "event_at": TS, "membership_id": pl.Utf8},
    )
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in EVENT_SCHEMA.items() if c not in given.columns]
    return given.with_columns(missing).select(EVENT_SCHEMA.names()).cast(EVENT_SCHEMA)


def _write(
    tmp_path: Path,
    members: pl.DataFrame,
    events: pl.DataFrame,
    *,
    history: list[tuple[datetime, pl.DataFrame]] = (),  # type: ignore[assignment]
    whop_access: pl.DataFrame | None = None,
) -> Path:
    paths = []
    for run_at, frame in history:
        path = tmp_path / "history" / f"{run_at:%Y%m%dT%H%M%S%fZ}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(path)
        paths.append(path)
    snapshots = tmp_path / "snapshots"
    write_snapshot(
        snapshots,
        run_id="views-test",
        run_at=RUN_AT,
        member_activity=members,
        events=events,
        history_parquet=paths,
        drift=pl.DataFrame(schema={"membership_id": pl.Utf8, "reason": pl.Utf8}),
        pipeline_runs=pl.DataFrame(schema={"run_id": pl.Utf8}),
        keep=2,
        whop_access=whop_access,
    )
    return snapshots


def _rows(snapshots: Path, sql: str) -> list[tuple[Any, ...]]:
    con = open_latest(snapshots)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_weekly_cohort_retention_counts_members_still_valid_at_each_week_end(tmp_path: Path) -> None:
    members = _members(
        [
            # cohort of W0 (2026-11-02): four members
            {"membership_id": "a", "joined_at": W0},  # valid throughout
            {"membership_id": "b", "joined_at": W0 + timedelta(days=1), "valid": False},  # left in week 1 (event)
            {"membership_id": "c", "joined_at": W0 + timedelta(days=2), "valid": False},  # left in week 0 (event)
            # invalid with no "left" webhook: counted as leaving at its last activity (week 2, the current one)
            {"membership_id": "d", "joined_at": W0, "valid": False, "last_active": W0 + timedelta(days=15)},
            # cohort of 2026-11-09: one member, valid
            {"membership_id": "e", "joined_at": W0 + timedelta(days=8)},
            # cohort of 2026-11-16 (the run's week): one member who rejoined: the latest "left" counts
            {"membership_id": "f", "joined_at": W0 + timedelta(days=14), "valid": False},
        ]
    )
    events = _events(
        [
            ("b", "left", W0 + timedelta(days=9)),
            ("c", "left", W0 + timedelta(days=3)),
            ("f", "left", W0 + timedelta(days=14, hours=1)),
            ("f", "left", W0 + timedelta(days=15)),
            ("a", "accessed", W0 + timedelta(days=10)),
        ]
    )
    snapshots = _write(tmp_path, members, events)
    rows = _rows(snapshots, "SELECT * FROM weekly_cohort_retention")
    assert rows == [
        ("biz_1", date(2026, 11, 2), 0, date(2026, 11, 2), 4, 3, 0.75),
        ("biz_1", date(2026, 11, 2), 1, date(2026, 11, 9), 4, 2, 0.5),
        ("biz_1", date(2026, 11, 2), 2, date(2026, 11, 16), 4, 1, 0.25),
        ("biz_1", date(2026, 11, 9), 0, date(2026, 11, 9), 1, 1, 1.0),
        ("biz_1", date(2026, 11, 9), 1, date(2026, 11, 16), 1, 1, 1.0),
        ("biz_1", date(2026, 11, 16), 0, date(2026, 11, 16), 1, 0, 0.0),
    ]


def test_views_that_count_count_each_company_apart(tmp_path: Path) -> None:
    """One cohort, one day, one week, two companies (and members no company was named for): a row each, whose
    sum is the whole deployment's."""
    members = _members(
        [
            {"membership_id": "a1", "company_id": "biz_a", "joined_at": W0},
            {"membership_id": "a2", "company_id": "biz_a", "joined_at": W0, "valid": False, "status": "inactive"},
            {"membership_id": "b1", "company_id": "biz_b", "joined_at": W0 + timedelta(days=1), "status": "at_risk"},
            {"membership_id": "n1", "company_id": None, "joined_at": W0},
        ]
    )
    events = _events([("a2", "left", W0 + timedelta(days=8))])
    history = [(RUN_AT, members.drop("updated_at"))]
    snapshots = _write(tmp_path, members, events, history=history)

    cohorts = "SELECT company_id, week_number, members, retained FROM weekly_cohort_retention WHERE week_number < 2"
    assert _rows(snapshots, cohorts + " ORDER BY company_id NULLS LAST, week_number") == [
        ("biz_a", 0, 2, 2), ("biz_a", 1, 2, 1), ("biz_b", 0, 1, 1), ("biz_b", 1, 1, 1),
        (None, 0, 1, 1), (None, 1, 1, 1),
    ]  # fmt: skip
    assert _rows(snapshots, "SELECT company_id, active, at_risk, inactive, members FROM status_counts_per_day") == [
        ("biz_a", 1, 0, 1, 2), ("biz_b", 0, 1, 0, 1), (None, 1, 0, 0, 1),
    ]  # fmt: skip
    assert _rows(snapshots, "SELECT company_id, new_members, still_valid FROM new_members_per_week") == [
        ("biz_a", 2, 1), ("biz_b", 1, 1), (None, 1, 1),
    ]  # fmt: skip
    assert _rows(snapshots, "SELECT company_id, membership_id FROM members_at_risk_now") == [("biz_b", "b1")]


def test_status_transitions_compare_each_day_last_run_with_the_previous_day(tmp_path: Path) -> None:
    def scored(statuses: dict[str, str]) -> pl.DataFrame:
        return pl.DataFrame({"membership_id": list(statuses), "company_id": "biz_1", "status": list(statuses.values())})

    day1, day2, day4 = (datetime(2026, 11, d, tzinfo=UTC) for d in (14, 15, 17))
    history = [
        (day1 + timedelta(hours=8), scored({"m1": "active", "m2": "at_risk", "m3": "active"})),
        # day 1's last run wins over its earlier one
        (day1 + timedelta(hours=20), scored({"m1": "active", "m2": "inactive", "m3": "active"})),
        (day2 + timedelta(hours=9), scored({"m1": "at_risk", "m2": "inactive", "m3": "active", "m4": "active"})),
        # no run on the 16th: the 17th compares with the 15th
        (day4 + timedelta(hours=9), scored({"m1": "active", "m2": "active", "m3": "inactive", "m4": "active"})),
    ]
    members = _members([{"membership_id": "m1", "joined_at": W0}])
    snapshots = _write(tmp_path, members, _events([]), history=history)
    assert _rows(snapshots, "SELECT * FROM status_transitions") == [
        ("biz_1", date(2026, 11, 15), date(2026, 11, 14), "m1", "active", "at_risk"),
        ("biz_1", date(2026, 11, 17), date(2026, 11, 15), "m1", "at_risk", "active"),
        ("biz_1", date(2026, 11, 17), date(2026, 11, 15), "m2", "inactive", "active"),
        ("biz_1", date(2026, 11, 17), date(2026, 11, 15), "m3", "active", "inactive"),
    ]


def test_access_time_disagreements_list_gaps_over_a_day_and_one_sided_access(tmp_path: Path) -> None:
    t = datetime(2026, 11, 10, 12, tzinfo=UTC)
    members = _members(
        [{"membership_id": m, "member_name": f"Name {m}", "joined_at": W0} for m in ("p", "q", "r", "s", "u", "v")]
    )
    events = _events(
        [
            ("p", "accessed", t - timedelta(hours=23)),  # 23 h apart: agrees
            ("q", "accessed", t - timedelta(days=3)),  # Whop saw an access 3 days later
            ("q", "accessed", t - timedelta(days=5)),
            ("r", "accessed", t + timedelta(days=2)),  # webhooks saw one 2 days later
            ("s", "joined", t),  # no accessed webhook at all
            ("u", "accessed", t),  # Whop knows no access
            ("w", "accessed", t),  # not listed by Whop: not compared
        ]
    )
    access = pl.DataFrame(
        {
            "membership_id": ["p", "q", "r", "s", "u", "v"],
            "user_id": ["user_p", "user_q", "user_r", "user_s", "user_u", "user_v"],
            "last_accessed_at": [t, t, t, t, None, None],  # v: neither side knows any access: agrees
            "fetched_at": [t + timedelta(days=3)] * 6,
        },
        schema={"membership_id": pl.Utf8, "user_id": pl.Utf8, "last_accessed_at": TS, "fetched_at": TS},
    )
    snapshots = _write(tmp_path, members, events, whop_access=access)
    rows = _rows(
        snapshots,
        "SELECT membership_id, member_name, whop_last_accessed_at, webhook_last_accessed_at, gap_days, disagreement "
        "FROM access_time_disagreements",
    )
    assert rows == [
        ("s", "Name s", t, None, None, "no_webhook_access"),
        ("u", "Name u", None, t, None, "no_whop_access"),
        ("q", "Name q", t, t - timedelta(days=3), 3.0, "whop_later"),
        ("r", "Name r", t, t + timedelta(days=2), -2.0, "webhooks_later"),
    ]


def test_whop_member_access_is_empty_before_the_first_backfill(tmp_path: Path) -> None:
    snapshots = _write(tmp_path, _members([{"membership_id": "a", "joined_at": W0}]), _events([("a", "accessed", W0)]))
    assert _rows(snapshots, "SELECT count(*) FROM whop_member_access") == [(0,)]
    assert _rows(snapshots, "SELECT count(*) FROM access_time_disagreements") == [(0,)]


@pytest.mark.parametrize("view", sorted(VIEW_COLUMNS))
def test_every_view_column_is_described_in_order(tmp_path: Path, view: str) -> None:
    snapshots = _write(tmp_path, _members([{"membership_id": "a", "joined_at": W0}]), _events([]))
    described = [row[0] for row in _rows(snapshots, f"DESCRIBE {view}")]
    assert described == list(VIEW_COLUMNS[view])
