"""Helpers for the reconcile tests: raw records written with the landing's own encoder
(memberpulse.contracts.raw_record).

The landing's own writer is exercised by the landing tests and the end-to-end test; here the records are
written by hand so each test controls event times, duplicates and torn lines precisely.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from memberpulse.contracts.raw_record import encode_raw_record, segment_path
from memberpulse.landing import mock_events as mock
from memberpulse.settings import Settings

AS_OF = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
COMPANY = "biz_test"
# Columns whose values are the run's outputs; updated_at is the run's clock and differs by design.
COMPARED = [
    "membership_id", "company_id", "user_id", "member_name", "email", "status", "engagement_score",
    "activity_score", "last_active", "joined_at", "total_sessions", "membership_status", "valid",
]  # fmt: skip


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"MEMBERPULSE_DATA_DIR": str(data_dir), "MEMBERPULSE_SNAPSHOTS_KEEP": 3}
    values.update(overrides)
    return Settings(**values)


def member(n: int) -> mock.MockMember:
    return mock.MockMember(
        membership_id=f"mem_{n:04d}",
        user_id=f"user_{n:04d}",
        company_id=COMPANY,
        email=f"m{n}@example.com",
        username=f"member{n}",
        name=f"Member {n}",
    )


def raw_record(payload: dict[str, Any] | str, *, webhook_id: str | None = None, received_at: datetime = AS_OF) -> bytes:
    body = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return encode_raw_record(
        webhook_id=webhook_id or "msg_" + hashlib.sha256(body.encode()).hexdigest()[:24],
        received_at=received_at,
        signed_at=int(received_at.timestamp()),
        scheme="standard",
        event_type=payload.get("action") or payload.get("type") if isinstance(payload, dict) else None,
        body=body,
    )


def append_raw(data_dir: Path, lines: list[bytes], *, writer: str = "test-writer", day: str = "2026-11-27") -> Path:
    path = segment_path(data_dir / "landing", date.fromisoformat(day), writer, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        fh.write(b"".join(lines))
    return path


def scenario() -> list[bytes]:
    """Four members whose scores as of AS_OF follow from the scoring formula (see
    test_scores_follow_the_scoring_rules)."""
    day = timedelta(days=1)
    m1, m2, m3, m4 = member(1), member(2), member(3), member(4)
    return [
        raw_record(mock.went_valid(m1, created_at=AS_OF - 10 * day)),
        raw_record(mock.accessed(m1, accessed_at=AS_OF - 5 * day)),
        raw_record(mock.accessed(m1, accessed_at=AS_OF - 3.5 * day)),
        raw_record(mock.activated(m2, at=AS_OF - 20 * day)),
        raw_record(mock.went_valid(m3, created_at=AS_OF - 40 * day)),
        raw_record(mock.went_valid(m4, created_at=AS_OF - 30 * day)),
        raw_record(mock.went_invalid(m4, expired_at=AS_OF - 2 * day)),
    ]


def crowd(count: int, *, start: int = 1, active_days_ago: float = 1.0) -> list[bytes]:
    """``count`` members from ``mem_<start>`` on, each valid since a day of the last forty and last active
    ``active_days_ago`` (enough rows that publishing them takes many kilobytes on the wire)."""
    day = timedelta(days=1)
    lines = []
    for n in range(start, start + count):
        m = member(n)
        lines.append(raw_record(mock.went_valid(m, created_at=AS_OF - (1 + n % 40) * day)))
        lines.append(raw_record(mock.accessed(m, accessed_at=AS_OF - active_days_ago * day)))
    return lines


def snapshot_members(settings: Settings) -> pl.DataFrame:
    with duckdb.connect(str(settings.snapshots_dir / "latest.duckdb"), read_only=True) as con:
        frame = con.sql("SELECT * FROM member_activity").pl()
    return frame.select(COMPARED).sort("membership_id")
