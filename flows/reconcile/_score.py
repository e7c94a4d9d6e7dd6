"""The score step (every member as of T) and the drift step (where Whop's API and the webhooks disagree)."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from memberpulse import transforms
from memberpulse.flows.publish import ChangeHints
from memberpulse.flows.reconcile._ingest import Ingested
from memberpulse.flows.whop import latest_snapshots, read_together
from memberpulse.settings import Settings


def score(settings: Settings, state: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    return transforms.score(state, as_of=as_of, params=settings.scoring)


def change_hints(settings: Settings, state: pl.DataFrame, ingested: Ingested, as_of: datetime) -> ChangeHints:
    """Which scored rows can differ from an earlier publish: this run's touched members, plus those time
    alone moves (computed from the state). ``state`` is what was scored; a rebuild for a backdated as-of
    is not the committed state, so its rows are compared in full."""
    params = settings.scoring
    return ChangeHints(
        as_of=as_of,
        scoring=(params.half_life_days, params.active_days, params.at_risk_days),
        token_before=ingested.token_before,
        token_after=ingested.manifest.change_token,
        touched=ingested.touched,
        moved=lambda earlier: transforms.moved_between(state, earlier=earlier, later=as_of, params=params),
        exact=state is ingested.state,
    )


def drift(settings: Settings, state: pl.DataFrame) -> pl.DataFrame:
    """Members whose webhook-derived state disagrees with their company's latest backfill snapshot (none without
    one): each company is judged against its own latest complete fetch, so a company whose last fetch failed is
    judged against the one before, and one never fetched not at all."""
    memberships, members = read_together(latest_snapshots(settings.warehouse_dir))
    return transforms.drift(state, memberships, members)
