"""Step 2, score every member as of T; and the drift between Whop's API view and the webhooks' view."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from memberpulse import transforms
from memberpulse.flows.whop import latest_snapshot
from memberpulse.settings import Settings


def score(settings: Settings, state: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    params = transforms.ScoringParams(
        half_life_days=settings.half_life_days,
        active_days=settings.active_days,
        at_risk_days=settings.at_risk_days,
    )
    return transforms.score(state, as_of=as_of, params=params)


def drift(settings: Settings, state: pl.DataFrame) -> pl.DataFrame:
    """Members whose webhook-derived state disagrees with the latest backfill snapshot (none without one)."""
    snap = latest_snapshot(settings.warehouse_dir)
    if snap is None:
        return transforms.drift(state, None, None)
    return transforms.drift(state, snap.read_memberships(), snap.read_members())
