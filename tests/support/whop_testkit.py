"""Shared pieces of the backfill tests (imported by conftest and the tests; a plain module, so the name is
unique across the suite)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memberpulse.settings import Settings
from memberpulse.testing.whop_faults import Faults
from memberpulse.whop_simulator import Population, SimulatorState, create_app, serve_in_thread

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


@dataclass
class Companies:
    """Several companies behind one simulator (an app's key reads them all; ``own_keys`` read one each)."""

    base_url: str
    populations: dict[str, Population]
    faults: Faults
    state: SimulatorState

    def served(self, company_id: str, status: int | None = None) -> int:
        return sum(1 for r in self.state.served(status=status) if r.company_id == company_id)


def most_in_any_window(times: list[float], seconds: float) -> int:
    """The most request times that any window of ``seconds`` holds (a sliding window, as the simulator counts)."""
    ordered, most, start = sorted(times), 0, 0
    for end, at in enumerate(ordered):
        while ordered[start] <= at - seconds:
            start += 1
        most = max(most, end - start + 1)
    return most


#: Three companies: A and B read with the app's key (API_KEY), C with its own.
A, B, C = "biz_alpha", "biz_bravo", "biz_charlie"
C_KEY = "sim_key_of_charlie_only"
PER_COMPANY = 60


@contextmanager
def serve_companies(rate_limit: tuple[int, float] | None = None, per_company: int = PER_COMPANY) -> Iterator[Companies]:
    """A, B and C (``per_company`` members each, now) behind one simulator on 127.0.0.1; ``rate_limit`` =
    (requests, seconds) per key, enforced with Whop's 429."""
    now = datetime.now(UTC).replace(microsecond=0)
    populations = {
        c: Population.generate(seed=n, n=per_company, company_id=c, now=now) for n, c in enumerate((A, B, C), 21)
    }
    faults = Faults()
    app = create_app(
        list(populations.values()), api_key=API_KEY, company_keys={C: C_KEY}, intercept=faults,
        rewrite=faults.rewrite, rate_limit=rate_limit,
    )  # fmt: skip
    with serve_in_thread(app) as base_url:
        yield Companies(base_url, populations, faults, app.state.whop_simulator)
