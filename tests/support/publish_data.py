"""Scored member frames and table reads for the publish tests and the publish benchmark."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import psycopg

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
MEMBER_TABLE_COLUMNS = (
    "membership_id, company_id, user_id, member_name, email, status, engagement_score, activity_score,"
    " last_active, joined_at, total_sessions, membership_status, valid, updated_at"
)


def members(n: int, *, start: int = 0, score: int = 50, status: str = "active") -> pl.DataFrame:
    """``n`` scored rows shaped like the reconcile flow's output (no updated_at: the publisher stamps it)."""
    ids = range(start, start + n)
    return pl.DataFrame(
        {
            "membership_id": [f"mem_{i:07d}" for i in ids],
            "company_id": ["biz_test"] * n,
            "user_id": [f"user_{i:07d}" for i in ids],
            "member_name": [f"Member {i}" for i in ids],
            "email": [f"m{i}@example.com" for i in ids],
            "status": [status] * n,
            "engagement_score": [score] * n,
            "last_active": [T0 - timedelta(hours=i % 48) for i in ids],
            "joined_at": [T0 - timedelta(days=30 + i % 10) for i in ids],
            "total_sessions": [i % 7 for i in ids],
            "membership_status": ["active"] * n,
            "valid": [True] * n,
        },
        schema_overrides={"last_active": pl.Datetime("us", "UTC"), "joined_at": pl.Datetime("us", "UTC")},
    )


def read_members(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT {MEMBER_TABLE_COLUMNS} FROM member_activity ORDER BY membership_id").fetchall()


class SleepRecorder:
    """Stands in for time.sleep so retry tests are instant and can assert the backoff schedule."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
