"""Comparing only the members that can have changed (ChangeHints) gives exactly the full comparison, over
random event batches, random as-of steps (forward and back) and publishes that fail and are caught up."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import polars as pl
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from memberpulse import transforms
from memberpulse.flows.publish import ChangeHints, plan_publish
from tests.transforms.test_transforms_properties import (
    PARAMS,
    SETTINGS,
    US_PER_DAY,
    dt,
    events_of,
    raw_record,
    times,
    webhook_events,
)

SCORING = (PARAMS.half_life_days, PARAMS.active_days, PARAMS.at_risk_days)


@st.composite
def runs(draw: st.DrawFn) -> list[tuple[list[Any], int, bool]]:
    """Each run: its new webhook events, the hours its as-of moves (negative: backdated), and whether its
    publish succeeds."""
    out, index = [], 0
    for _ in range(draw(st.integers(1, 6))):
        batch = [draw(webhook_events(index + i)) for i in range(draw(st.integers(0, 5)))]
        index += len(batch)
        out.append((batch, draw(st.integers(-24, 24 * 12)), draw(st.booleans() | st.just(True))))
    return out


@SETTINGS
@given(runs(), times)
def test_targeted_diff_equals_the_full_diff(plan: list[tuple[list[Any], int, bool]], start_us: int) -> None:
    state: pl.DataFrame | None = None
    as_of = dt(start_us)
    last_full: pl.DataFrame | None = None
    last_targeted: pl.DataFrame | None = None
    remembered: dict[str, Any] = {"as_of": None, "token": None, "scoring": None}
    for seq, (batch, hours, publish_ok) in enumerate(plan, start=1):
        events = events_of([raw_record(e) for e in batch])
        before = state
        state = transforms.fold(before, events) if events.height or before is None else before
        as_of = as_of + timedelta(hours=hours)
        exact = not transforms.needs_rebuild(state, as_of)
        scored = transforms.score(state, as_of=as_of, params=PARAMS)
        current_state, current_as_of = state, as_of
        hints = ChangeHints(
            as_of=as_of, scoring=SCORING, token_before=f"L/{seq - 1}", token_after=f"L/{seq}",
            touched=events.get_column("membership_id").unique() if before is not None else None,
            moved=lambda t, s=current_state, a=current_as_of: transforms.moved_between(
                s, earlier=t, later=a, params=PARAMS),
            exact=exact,
        )  # fmt: skip
        run_at = dt(start_us + seq * US_PER_DAY)
        full = plan_publish(scored, last_full, run_at=run_at)
        candidates = hints.candidates(**remembered)
        targeted = plan_publish(scored, last_targeted, run_at=run_at, candidates=candidates)
        assert_frame_equal(targeted.changed.sort("membership_id"), full.changed.sort("membership_id"))
        assert_frame_equal(targeted.published, full.published)
        assert targeted.total == full.total
        if publish_ok:
            last_full, last_targeted = full.published, targeted.published
            remembered = hints.published_from()
