"""Which companies a backfill fetches, and the round that remembers which of them failed.

The companies: ``memberpulse.flows.companies.serving_companies``. A company no key reads fails before any
request (a setting to fix).

A *round* starts with a backfill of every company. While companies of the round failed, a backfill started
within MEMBERPULSE_BACKFILL_RETRY_HOURS of its start is a retry: it fetches only the companies that failed and
those never fetched at all, and the others keep the snapshot the round gave them. Past that window, once nothing
failed, or with ``all_companies``, the next backfill starts a new round. The round lives in
``warehouse/backfill/state.json`` (state codec ``backfill-state``), written after the fetches: a backfill killed
before it repeats its plan.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from memberpulse.flows.companies import CompanyFailure, serving_companies
from memberpulse.flows.state_codec import (
    BACKFILL_STATE,
    BackfillState,
    CompanyFailureRecord,
    read_document,
    write_document,
)
from memberpulse.flows.whop import backfill_dir, latest_snapshots
from memberpulse.settings import Settings

log = logging.getLogger("memberpulse.backfill")


@dataclass(frozen=True)
class Plan:
    """What one backfill does: ``due`` companies fetched, ``keyless`` ones failed at once, ``fetched_this_round``
    ones left alone (a retry), in the round that started at ``round_started``."""

    due: tuple[str, ...]
    keyless: tuple[CompanyFailure, ...]
    fetched_this_round: tuple[str, ...]
    round_started: datetime
    new_round: bool
    previous: BackfillState = field(default_factory=BackfillState)


def plan(settings: Settings, now: datetime, *, all_companies: bool = False) -> Plan:
    """This backfill's companies (see the module docstring)."""
    previous = load_round(settings.warehouse_dir)
    every = serving_companies(settings)
    keyless = tuple(
        CompanyFailure(
            c,
            f"no API key reads company {c}: WHOP_API_KEY is not set and WHOP_COMPANY_API_KEYS has none for it "
            f"(add {c}=<its API key> to WHOP_COMPANY_API_KEYS, or leave it out with -{c} in WHOP_COMPANY_IDS)",
            "configuration",
        )
        for c in every
        if settings.whop_key_for(c) is None
    )
    readable = [c for c in every if settings.whop_key_for(c) is not None]
    started = previous.round_started
    retry_until = started + timedelta(hours=settings.backfill_retry_hours) if started else None
    if all_companies or not previous.failed or retry_until is None or now >= retry_until:
        return Plan(tuple(readable), keyless, (), now, True, previous)
    assert started is not None
    ever_fetched = {s.company_id for s in latest_snapshots(settings.warehouse_dir)}
    due = tuple(c for c in readable if c in previous.failed or c not in ever_fetched)
    done = tuple(c for c in readable if c not in due)
    return Plan(due, keyless, done, started, False, previous)


def state_path(warehouse_dir: Path) -> Path:
    return backfill_dir(warehouse_dir) / "state.json"


def load_round(warehouse_dir: Path) -> BackfillState:
    """The current round (a fresh one before the first backfill); CorruptState when its file is damaged."""
    return read_document(state_path(warehouse_dir), BACKFILL_STATE) or BackfillState()


def record_round(warehouse_dir: Path, plan: Plan, failures: Mapping[str, CompanyFailure], now: datetime) -> None:
    """The round after this backfill: its start, and every company of it that failed (this backfill's failures;
    a retry fetched every company still failed, so none is carried over)."""
    failed = {
        company: CompanyFailureRecord(failure.reason, failure.kind, now.isoformat())
        for company, failure in failures.items()
    }
    state_path(warehouse_dir).parent.mkdir(parents=True, exist_ok=True)
    write_document(state_path(warehouse_dir), BACKFILL_STATE, BackfillState(plan.round_started.isoformat(), failed))
