"""Shared pieces of the backfill tests (imported by conftest and the tests; a plain module, so the name is
unique across the suite)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memberpulse.settings import Settings
from memberpulse.testing.whop_faults import Faults
from memberpulse.whop_simulator import Population, SimulatorState

API_KEY = "sim_backfill_test_key"
COMPANY_ID = "biz_backfilltest"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POPULATION_SIZE = 230  # with PAGE_SIZE 40: 6 pages per resource
PAGE_SIZE = 40


@dataclass
class Simulator:
    base_url: str
    population: Population
    faults: Faults
    state: SimulatorState


def make_settings(data_dir: Path, base_url: str, **overrides: Any) -> Settings:
    """Test settings: every backfill knob explicit (nothing from the environment), waits short."""
    values: dict[str, Any] = {
        "WHOP_API_KEY": API_KEY,
        "WHOP_COMPANY_ID": COMPANY_ID,
        "WHOP_API_BASE_URL": base_url,
        "MEMBERPULSE_WHOP_PAGE_SIZE": PAGE_SIZE,
        "MEMBERPULSE_WHOP_MAX_ATTEMPTS": 3,
        "MEMBERPULSE_WHOP_MAX_RATE_LIMIT_WAIT_SECONDS": 2.0,
        "MEMBERPULSE_WHOP_TIMEOUT_SECONDS": 2.0,
        "MEMBERPULSE_WHOP_BACKOFF_BASE_SECONDS": 0.05,
        "MEMBERPULSE_DATA_DIR": data_dir,
    }
    values.update(overrides)
    values = {k: v for k, v in values.items() if v is not None}  # None = leave the variable unset
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]
