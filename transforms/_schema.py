"""Frame schemas and event vocabulary shared by the transforms (the contract other parts code against).

Every time column is ``Datetime("us", "UTC")``. Nullable unless noted.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import polars as pl

UTC_US: Final = pl.Datetime("us", "UTC")

# DESIGN "Events understood": event type → kind. Everything else is kind ``other``: kept, counted, not folded.
EVENT_KINDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "membership.went_valid": "joined",
        "membership.activated": "joined",
        "membership.accessed": "accessed",
        "membership.went_invalid": "left",
        "membership.deactivated": "left",
    }
)
SUPPORTED_EVENTS: Final[tuple[str, ...]] = tuple(EVENT_KINDS)
KINDS: Final[tuple[str, ...]] = ("joined", "accessed", "left", "other")

# Whop statuses that keep access (DESIGN "Scoring": API fact → valid).
VALID_STATUSES: Final[frozenset[str]] = frozenset({"trialing", "active", "past_due", "completed"})

# Largest reject body prefix kept, in bytes.
REJECT_BODY_BYTES: Final = 4096

# DESIGN "Raw record" (one landing NDJSON line). webhook_id, received_at and body are required.
RAW_SCHEMA: Final = pl.Schema(
    {
        "webhook_id": pl.String(),
        "received_at": pl.String(),
        "signed_at": pl.Int64(),
        "scheme": pl.String(),
        "event_type": pl.String(),
        "body": pl.String(),
    }
)
SOURCE_SCHEMA: Final = pl.Schema({"source_file": pl.String(), "source_offset": pl.Int64()})

EVENT_SCHEMA: Final = pl.Schema(
    {
        "webhook_id": pl.String(),  # not null
        "received_at": UTC_US,  # not null
        "signed_at": pl.Int64(),
        "scheme": pl.String(),
        "event_type": pl.String(),  # body's ``type`` or ``action``, else the raw record's
        "kind": pl.String(),  # not null: joined | accessed | left | other
        "event_at": UTC_US,  # not null: DESIGN "Event time"
        "time_source": pl.String(),  # not null: envelope | payload | signed_at | received_at (see dedupe)
        "membership_id": pl.String(),  # data.id; not null for joined/accessed/left
        "user_id": pl.String(),  # data.user_id or data.user.id
        "company_id": pl.String(),  # data.company_id, data.company.id, or the v1 envelope's account_id
        "username": pl.String(),  # data.user.username or data.username
        "member_name": pl.String(),  # data.user.name, else the username
        "email": pl.String(),  # data.user.email or data.email
        "membership_status": pl.String(),  # data.status (v5, v1)
    }
)

REJECT_SCHEMA: Final = pl.Schema(
    {
        "webhook_id": pl.String(),
        "received_at": pl.String(),  # as written in the raw record
        "event_type": pl.String(),
        "reason": pl.String(),  # not null
        "body": pl.String(),  # the body (or the whole line) cut to REJECT_BODY_BYTES
        "source_file": pl.String(),
        "source_offset": pl.Int64(),
    }
)

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

# score(): DESIGN "Published table" minus updated_at (the flow sets it).
SCORE_SCHEMA: Final = pl.Schema(
    {
        "membership_id": pl.String(),
        "company_id": pl.String(),
        "user_id": pl.String(),
        "member_name": pl.String(),
        "email": pl.String(),
        "status": pl.String(),  # not null: active | at_risk | inactive
        "engagement_score": pl.Int32(),  # not null: 0..100
        "activity_score": pl.Int32(),  # not null: = engagement_score
        "last_active": UTC_US,
        "joined_at": UTC_US,
        "total_sessions": pl.Int32(),  # not null
        "membership_status": pl.String(),
        "valid": pl.Boolean(),  # not null: no validity fact yet counts as not valid
    }
)

DRIFT_SCHEMA: Final = pl.Schema(
    {
        "membership_id": pl.String(),
        "company_id": pl.String(),
        "user_id": pl.String(),
        "reason": pl.String(),  # comma-separated, in this order: api_only, webhook_only, validity, status
        "webhook_valid": pl.Boolean(),
        "api_valid": pl.Boolean(),
        "webhook_status": pl.String(),
        "api_status": pl.String(),
        "webhook_valid_at": UTC_US,
        "webhook_status_at": UTC_US,
        "webhook_last_at": UTC_US,
        "api_fetched_at": UTC_US,
    }
)
