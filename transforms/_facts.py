"""One backfill snapshot (memberships + members) → API facts (``FACT_SCHEMA``), one per membership.

Input schemas (brief, "warehouse/backfill"; all times Datetime(us, UTC)):
memberships: membership_id, company_id, user_id?, member_id?, product_id?, status, created_at, updated_at?,
canceled_at?, username?, name?, email?, fetched_at. members: member_id, user_id?, username?, name?, email?,
status?, joined_at?, last_accessed_at?, most_recent_action_at?, fetched_at.

Members are matched to memberships by user id (the members list carries no membership id), within their snapshot
when both frames have a ``snapshot`` column (several snapshots read together: one user can be a member of each
company, with a last access in each; and each snapshot gives its own fact, as it would read alone). Should a
snapshot list a user twice, the member row with the latest ``fetched_at``, then the latest ``last_accessed_at``,
then the greatest ``member_id`` is used;
should it list a membership twice, the row with the latest ``fetched_at`` then the greatest other values.
Name and email prefer the membership's own fields, then the member's.
"""

from __future__ import annotations

import polars as pl

from memberpulse.contracts.events import VALID_STATUSES
from memberpulse.contracts.frames import conform
from memberpulse.contracts.times import UTC_US
from memberpulse.transforms._schema import FACT_SCHEMA

_MEMBERSHIP_COLS = pl.Schema(
    {
        "membership_id": pl.String(),
        "company_id": pl.String(),
        "user_id": pl.String(),
        "status": pl.String(),
        "created_at": UTC_US,
        "username": pl.String(),
        "name": pl.String(),
        "email": pl.String(),
        "fetched_at": UTC_US,
    }
)
_MEMBER_COLS = pl.Schema(
    {
        "member_id": pl.String(),
        "user_id": pl.String(),
        "username": pl.String(),
        "name": pl.String(),
        "email": pl.String(),
        "last_accessed_at": UTC_US,
        "fetched_at": UTC_US,
    }
)


def _nonempty(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr.str.len_bytes() > 0).then(expr)


def api_facts(memberships: pl.DataFrame, members: pl.DataFrame | None) -> pl.DataFrame:
    """API facts from one snapshot (``FACT_SCHEMA``); ``members`` may be ``None`` (no activity data)."""
    by_snapshot = members is not None and "snapshot" in members.columns and "snapshot" in memberships.columns
    keys = ["snapshot", "user_id"] if by_snapshot else ["user_id"]
    ms = conform(memberships, {**_MEMBERSHIP_COLS, "snapshot": pl.String()}).filter(
        pl.col("membership_id").is_not_null() & pl.col("fetched_at").is_not_null()
    )
    first = ("membership_id", "fetched_at")
    order = [*first, *(c for c in _MEMBERSHIP_COLS if c not in first)]
    one_per = ["snapshot", "membership_id"] if by_snapshot else ["membership_id"]  # one fact per snapshot listing it
    ms = ms.sort(order, nulls_last=False).unique(one_per, keep="last", maintain_order=True)
    mem = conform(members, {**_MEMBER_COLS, "snapshot": pl.String()}).filter(pl.col("user_id").is_not_null())
    mem = mem.sort([*keys, "fetched_at", "last_accessed_at", "member_id"], nulls_last=False).unique(
        keys, keep="last", maintain_order=True
    )
    joined = ms.join(
        mem.select(
            *keys,
            pl.col("username").alias("m_username"),
            pl.col("name").alias("m_name"),
            pl.col("email").alias("m_email"),
            "last_accessed_at",
        ),
        on=keys,
        how="left",
    )
    username = pl.coalesce(_nonempty(pl.col("username")), _nonempty(pl.col("m_username")))
    return joined.select(
        "membership_id",
        "company_id",
        "user_id",
        pl.col("fetched_at").alias("fact_at"),
        pl.col("status").alias("membership_status"),
        pl.col("status").is_in(list(VALID_STATUSES)).fill_null(False).alias("valid"),
        "created_at",
        "last_accessed_at",
        username.alias("username"),
        pl.coalesce(_nonempty(pl.col("name")), _nonempty(pl.col("m_name")), username).alias("member_name"),
        pl.coalesce(_nonempty(pl.col("email")), _nonempty(pl.col("m_email"))).alias("email"),
    ).cast(FACT_SCHEMA)
