"""Whop's own last access time per membership, from the latest backfill, for the ``whop_member_access`` table."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from memberpulse import transforms
from memberpulse.flows.whop import latest_snapshot


def whop_access(warehouse_dir: Path) -> pl.DataFrame | None:
    """``membership_id, company_id, user_id, last_accessed_at, fetched_at`` as Whop's API reported them, or None
    before the first backfill."""
    snap = latest_snapshot(warehouse_dir)
    if snap is None:
        return None
    facts = transforms.api_facts(snap.read_memberships(), snap.read_members())
    return facts.select("membership_id", "company_id", "user_id", "last_accessed_at", fetched_at="fact_at")
