"""Frame schemas and event vocabulary shared by the transforms (the contract other parts code against).

Every time column is ``Datetime("us", "UTC")``. Nullable unless noted.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from memberpulse.contracts import failures
from memberpulse.contracts.raw_record import RAW_RECORD_SCHEMA
from memberpulse.contracts.tables import EVENTS, MEMBER_ACTIVITY, RECONCILIATION_DRIFT
from memberpulse.contracts.times import UTC_US

# One landing NDJSON line: see memberpulse.contracts.raw_record.
RAW_SCHEMA: Final = RAW_RECORD_SCHEMA

# parse_raw(): one row per webhook (the snapshot's ``events`` table; columns described there).
EVENT_SCHEMA: Final = EVENTS.schema

# parse_ndjson() / parse_raw() rejects: a webhook failure as found (see memberpulse.contracts.failures).
REJECT_SCHEMA: Final = failures.REJECT_SCHEMA
REJECT_BODY_BYTES: Final = failures.REJECT_BODY_BYTES
# Where a raw line lies (passed through to its reject).
SOURCE_SCHEMA: Final = pl.Schema({name: REJECT_SCHEMA[name] for name in ("source_file", "source_offset")})

# api_facts(): one API fact per membership listed in a backfill snapshot, dated by the snapshot's fetched_at.
FACT_SCHEMA: Final = pl.Schema(
    {
        "membership_id": pl.String(),  # not null
        "company_id": pl.String(),
        "user_id": pl.String(),
        "fact_at": UTC_US,  # not null: the snapshot's fetched_at
        "membership_status": pl.String(),
        "valid": pl.Boolean(),  # not null: membership_status in VALID_STATUSES
        "created_at": UTC_US,
        "last_accessed_at": UTC_US,  # from the members list, matched by user id
        "username": pl.String(),
        "member_name": pl.String(),
        "email": pl.String(),
    }
)

# fold(): one row per membership. ``*_key`` columns are the tie-break keys that make folding order-free
# (see transforms._fold); the other columns are what they mean.
STATE_SCHEMA: Final = pl.Schema(
    {
        "membership_id": pl.String(),  # not null, unique
        "company_id": pl.String(),
        "user_id": pl.String(),
        "valid": pl.Boolean(),  # latest validity fact (webhook or API); null = no validity fact yet
        "valid_at": UTC_US,
        "valid_source": pl.String(),  # webhook | api
        "valid_key": pl.Int64(),
        "webhook_valid": pl.Boolean(),  # latest validity fact from webhooks only (drift)
        "webhook_valid_at": UTC_US,
        "webhook_valid_key": pl.Int64(),
        "joined_at": UTC_US,
        "last_active": UTC_US,
        "access_instants": pl.List(UTC_US),  # distinct access instants, unordered
        "total_sessions": pl.Int64(),  # not null: len(access_instants)
        "member_name": pl.String(),
        "member_name_key": pl.Int64(),
        "email": pl.String(),
        "email_key": pl.Int64(),
        "membership_status": pl.String(),
        "membership_status_key": pl.Int64(),
        "webhook_status": pl.String(),  # latest membership status from webhooks only (drift)
        "webhook_status_at": UTC_US,
        "webhook_status_key": pl.Int64(),
        "min_fact_at": UTC_US,  # not null: earliest fact
        "max_fact_at": UTC_US,  # not null: latest fact (a backdated score needs a rebuild if > as_of)
        "webhook_first_at": UTC_US,  # earliest webhook fact (null: never seen by webhook)
        "webhook_last_at": UTC_US,
        "api_last_at": UTC_US,  # latest API fact (null: never seen by the API)
    }
)

# score(): the member_activity table minus updated_at (the flow stamps it when publishing).
SCORE_SCHEMA: Final = pl.Schema({c.name: c.dtype for c in MEMBER_ACTIVITY.without("updated_at")})

# drift(): the snapshot's reconciliation_drift table.
DRIFT_SCHEMA: Final = RECONCILIATION_DRIFT.schema
