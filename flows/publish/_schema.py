"""The published tables' columns, in one place, and the conversion of a scored frame into them."""

from __future__ import annotations

from typing import Final

import polars as pl

from memberpulse.errors import InvalidInput

UTC_MICROS: Final = pl.Datetime("us", "UTC")

# member_activity, in table order. activity_score is generated in Postgres (= engagement_score): never sent.
MEMBER_ACTIVITY_SCHEMA: Final[dict[str, pl.DataType]] = {
    "membership_id": pl.Utf8(),
    "company_id": pl.Utf8(),
    "user_id": pl.Utf8(),
    "member_name": pl.Utf8(),
    "email": pl.Utf8(),
    "status": pl.Utf8(),
    "engagement_score": pl.Int32(),
    "last_active": UTC_MICROS,
    "joined_at": UTC_MICROS,
    "total_sessions": pl.Int32(),
    "membership_status": pl.Utf8(),
    "valid": pl.Boolean(),
    "updated_at": UTC_MICROS,
}
MEMBER_ACTIVITY_COLUMNS: Final = tuple(MEMBER_ACTIVITY_SCHEMA)
KEY: Final = "membership_id"
# What "changed" means: every published column except the key and the run-stamped updated_at.
COMPARED_COLUMNS: Final = tuple(c for c in MEMBER_ACTIVITY_COLUMNS if c not in (KEY, "updated_at"))
STATUSES: Final = frozenset({"active", "at_risk", "inactive"})
_REQUIRED: Final = ("membership_id", "status", "engagement_score", "valid")

PIPELINE_RUN_COLUMNS: Final = (
    "run_id", "flow", "started_at", "finished_at", "status", "events_ingested", "rejects",
    "rows_inserted", "rows_updated", "rows_unchanged", "drift_count", "error",
)  # fmt: skip

WEBHOOK_FAILURE_INPUT_SCHEMA: Final[dict[str, pl.DataType]] = {
    "webhook_id": pl.Utf8(),
    "event_type": pl.Utf8(),
    "reason": pl.Utf8(),
    "received_at": UTC_MICROS,
    "body_prefix": pl.Utf8(),
}
WEBHOOK_FAILURE_COLUMNS: Final = (
    "webhook_id", "reason", "event_type", "body_prefix", "first_seen", "last_seen",
)  # fmt: skip
BODY_PREFIX_CHARS: Final = 512


def conform_members(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` with exactly the published columns and types (updated_at may be absent: it is stamped later).

    Raises InvalidInput for a missing required column, a duplicate or null key, an unknown status or a
    score outside 0..100 — the database would refuse them too, but only after a round trip.
    """
    missing = [c for c in _REQUIRED if c not in rows.columns]
    if missing:
        raise InvalidInput(
            f"member rows lack the published column(s) {missing}",
            value=rows.columns,
            hint="pass the scored frame (DESIGN 'Published table')",
        )
    exprs = [
        (pl.col(name) if name in rows.columns else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in MEMBER_ACTIVITY_SCHEMA.items()
    ]
    frame = rows.select(exprs)
    if frame[KEY].null_count():
        raise InvalidInput("member rows have a null membership_id", hint="every published row needs its key")
    if frame[KEY].n_unique() != frame.height:
        dupes = frame.filter(pl.col(KEY).is_duplicated())[KEY].unique().head(5).to_list()
        raise InvalidInput("member rows repeat a membership_id", value=dupes, hint="one row per member")
    bad_status = frame.filter(~pl.col("status").is_in(list(STATUSES)) | pl.col("status").is_null())
    if bad_status.height:
        raise InvalidInput(
            "member rows have a status outside active|at_risk|inactive",
            value=bad_status["status"].unique().head(5).to_list(),
        )
    score = pl.col("engagement_score")
    bad_score = frame.filter(~score.is_between(0, 100) | score.is_null())
    if bad_score.height:
        raise InvalidInput(
            "member rows have an engagement_score outside 0..100",
            value=bad_score["engagement_score"].head(5).to_list(),
        )
    # The scorer treats an unknown validity as not valid (score 0, inactive); publish it the same way.
    return frame.with_columns(pl.col("total_sessions").fill_null(0), pl.col("valid").fill_null(False))


def summarise_webhook_failures(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per (webhook_id, reason): first/last time seen, the latest event type and body prefix."""
    missing = [c for c in ("webhook_id", "reason", "received_at") if c not in frame.columns]
    if missing:
        raise InvalidInput(
            f"webhook failure rows lack {missing}",
            value=frame.columns,
            hint="columns: webhook_id, event_type, reason, received_at, body_prefix",
        )
    typed = frame.select(
        (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in WEBHOOK_FAILURE_INPUT_SCHEMA.items()
    )
    if typed["webhook_id"].null_count() or typed["reason"].null_count() or typed["received_at"].null_count():
        raise InvalidInput(
            "webhook failure rows need webhook_id, reason and received_at",
            hint="for a body without an id, use the sha256 of the body as the landing does",
        )
    return (
        typed.sort("received_at")
        .group_by("webhook_id", "reason", maintain_order=True)
        .agg(
            pl.col("event_type").drop_nulls().last(),
            pl.col("body_prefix").drop_nulls().last().str.slice(0, BODY_PREFIX_CHARS),
            pl.col("received_at").min().alias("first_seen"),
            pl.col("received_at").max().alias("last_seen"),
        )
        .select(WEBHOOK_FAILURE_COLUMNS)
    )
