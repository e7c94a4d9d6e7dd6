"""Whop's own last access time per membership, from each company's latest backfill (``whop_member_access``)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from memberpulse import transforms
from memberpulse.flows.whop import latest_snapshots, read_together


def whop_access(warehouse_dir: Path) -> pl.DataFrame | None:
    """``membership_id, company_id, user_id, last_accessed_at, fetched_at`` as Whop's API reported them, or None
    before the first backfill."""
    memberships, members = read_together(latest_snapshots(warehouse_dir))
    if memberships is None:
        return None
    facts = transforms.api_facts(memberships, members)
    return facts.select("membership_id", "company_id", "user_id", "last_accessed_at", fetched_at="fact_at")
