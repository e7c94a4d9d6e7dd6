"""Member state → scored rows as of T (``SCORE_SCHEMA``: the published columns except ``updated_at``).

The rules and their reasons: docs/architecture.md, "Scoring". days = (T − last_active) in days, a real number;
valid members score
``floor(100 · 0.5^(days / half_life) + 0.5)`` and are ``active`` if days ≤ active_days, ``at_risk`` if days ≤
at_risk_days, else ``inactive``; members not valid score 0 and are ``inactive`` (the row is kept).
Edge cases: a member with no validity fact yet (say, only accesses seen) counts as not
valid; days below 0 (a fact dated after T, e.g. an API last_accessed_at later than its snapshot, or a state
folded past T) count as 0, so scores stay within 0..100. Members whose first fact is after T are left out.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

# The scoring knobs and their defaults are defined with the contracts, which Settings reads too.
from memberpulse.contracts.scoring import ScoringParams as ScoringParams
from memberpulse.contracts.times import require_aware
from memberpulse.transforms._schema import SCORE_SCHEMA, STATE_SCHEMA

_US_PER_DAY = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_us_of(moment: datetime) -> int:
    """Exact microseconds since the epoch of an aware datetime (no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def needs_rebuild(state: pl.DataFrame, as_of: datetime) -> bool:
    """True when ``state`` holds facts later than ``as_of``: score it from ``fold(None, …, as_of=as_of)``."""
    if state.height == 0:
        return False
    latest = state["max_fact_at"].max()
    return latest is not None and latest > as_of  # type: ignore[operator]


def _days_since_active(t_us: int) -> pl.Expr:
    last_us = pl.col("last_active").dt.epoch("us")
    return ((t_us - last_us).cast(pl.Float64) / _US_PER_DAY).clip(lower_bound=0.0)


def _score_and_status(t_us: int, params: ScoringParams) -> tuple[pl.Expr, pl.Expr]:
    """(engagement_score, status) as of ``t_us`` from a state frame's ``valid`` and ``last_active``."""
    days = _days_since_active(t_us)
    valid = pl.col("valid").fill_null(False)
    scorable = valid & pl.col("last_active").is_not_null()
    raw_score = (100.0 * pl.lit(0.5).pow(days / params.half_life_days) + 0.5).floor().cast(pl.Int32)
    engagement = pl.when(scorable).then(raw_score).otherwise(pl.lit(0, dtype=pl.Int32))
    status = (
        pl.when(~scorable)
        .then(pl.lit("inactive"))
        .when(days <= params.active_days)
        .then(pl.lit("active"))
        .when(days <= params.at_risk_days)
        .then(pl.lit("at_risk"))
        .otherwise(pl.lit("inactive"))
    )
    return engagement, status


def moved_between(state: pl.DataFrame, *, earlier: datetime, later: datetime, params: ScoringParams) -> pl.Series:
    """Membership ids whose scored row as of ``later`` can differ from the one as of ``earlier`` with the same
    facts: the score stepped or the status crossed a threshold (time alone moves only these two), or the
    member's first fact falls in (earlier, later] so the row appears. Exact, not an estimate: every other
    member scores the same row at both times. Requires ``earlier <= later``."""
    require_aware(earlier, "earlier")
    require_aware(later, "later")
    t0, t1 = epoch_us_of(earlier), epoch_us_of(later)
    if t0 > t1:
        raise ValueError("moved_between needs earlier <= later")
    score0, status0 = _score_and_status(t0, params)
    score1, status1 = _score_and_status(t1, params)
    first = pl.col("min_fact_at").dt.epoch("us")
    entered = (first > t0) & (first <= t1)
    moved = (first <= t0) & ((score0 != score1) | (status0 != status1))
    return state.filter(entered | moved).get_column("membership_id")


def score(state: pl.DataFrame, *, as_of: datetime, params: ScoringParams) -> pl.DataFrame:
    """Scored rows as of ``as_of`` (timezone-aware), one per member with a fact at or before it."""
    require_aware(as_of, "as_of")
    t_us = epoch_us_of(as_of)
    state = state.select(list(STATE_SCHEMA)).cast(STATE_SCHEMA)
    valid = pl.col("valid").fill_null(False)
    engagement, status = _score_and_status(t_us, params)
    return (
        state.filter(pl.col("min_fact_at").dt.epoch("us") <= t_us)
        .select(
            "membership_id",
            "company_id",
            "user_id",
            "member_name",
            "email",
            status.alias("status"),
            engagement.alias("engagement_score"),
            engagement.alias("activity_score"),
            "last_active",
            "joined_at",
            pl.col("total_sessions").cast(pl.Int32),
            "membership_status",
            valid.alias("valid"),
        )
        .cast(SCORE_SCHEMA)
    )
