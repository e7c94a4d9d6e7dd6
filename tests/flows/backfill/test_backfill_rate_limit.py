"""Whop's per-key rate limit, enforced by the simulator (Whop's 429 past N requests in any window of W seconds,
scaled down from 600 a minute so a test takes seconds): the backfill's budget keeps every key under it, through
the plain calls of ``memberpulse backfill`` (this process's bucket) and through the deployed flow (a Prefect
global concurrency limit on the harness's server), while the companies of each key are fetched side by side."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from memberpulse.flows.backfill import backfill, backfill_flow
from memberpulse.flows.whop import RateBudget, credential_name
from memberpulse.settings import Settings
from tests.support.whop_testkit import (
    API_KEY,
    C_KEY,
    B,
    C,
    Companies,
    make_settings,
    most_in_any_window,
    serve_companies,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

LIMIT, WINDOW = 60, 6.0  # Whop's 600 a minute, scaled: the test's minute is six seconds
MEMBERS = 200  # 20 pages of 10 per resource: 80 requests on the app's key (A and B), 40 on C's own


def limited_settings(root: Path, companies: Companies, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "WHOP_COMPANY_ID": None, "WHOP_COMPANY_IDS": f"biz_alpha,{B}", "WHOP_COMPANY_API_KEYS": f"{C}={C_KEY}",
        "MEMBERPULSE_WHOP_PAGE_SIZE": 10, "MEMBERPULSE_WHOP_RATE_LIMIT_REQUESTS": LIMIT,
        "MEMBERPULSE_WHOP_RATE_LIMIT_WINDOW_SECONDS": WINDOW, "MEMBERPULSE_WHOP_MAX_RATE_LIMIT_WAIT_SECONDS": 30,
        **overrides,
    }  # fmt: skip
    return make_settings(root / "data", companies.base_url, **values)


def arrivals(companies: Companies, credential: str) -> list[float]:
    return [r.at for r in companies.state.served() if r.credential == credential]


def assert_every_key_stayed_under_the_limit(companies: Companies) -> None:
    assert companies.state.served(status=429) == []
    for key in ("app", C):
        times = arrivals(companies, key)
        assert len(times) > LIMIT or key == C, (key, len(times))  # the app's key needed more than one window
        assert most_in_any_window(times, WINDOW) <= LIMIT, key


def test_the_simulator_throttles_a_key_past_whops_limit_with_its_429(tmp_path: Path) -> None:
    """The control: with a budget larger than Whop's limit the simulator answers 429 ("Try again in N
    seconds.") and the client waits as told, so throttling in the tests is real."""
    with serve_companies(rate_limit=(LIMIT, WINDOW), per_company=MEMBERS) as companies:
        settings = limited_settings(tmp_path, companies, MEMBERPULSE_WHOP_RATE_LIMIT_REQUESTS=100_000)
        result = backfill(settings)
        assert set(result.written) == {"biz_alpha", B, C} and companies.state.served(status=429)
        assert most_in_any_window([r.at for r in companies.state.served(status=200) if r.credential == "app"],
                                  WINDOW) <= LIMIT  # fmt: skip


def test_plain_calls_keep_every_key_under_whops_limit(tmp_path: Path) -> None:
    with serve_companies(rate_limit=(LIMIT, WINDOW), per_company=MEMBERS) as companies:
        result = backfill(limited_settings(tmp_path, companies))
        assert set(result.written) == {"biz_alpha", B, C} and not result.failures
        assert_every_key_stayed_under_the_limit(companies)


def test_the_deployed_flow_keeps_every_key_under_whops_limit_through_prefect(tmp_path: Path) -> None:
    with serve_companies(rate_limit=(LIMIT, WINDOW), per_company=MEMBERS) as companies:
        settings = limited_settings(tmp_path, companies)
        result = backfill_flow(settings)
        assert set(result.written) == {"biz_alpha", B, C}
        assert_every_key_stayed_under_the_limit(companies)

    budget = RateBudget.from_settings(settings)
    with get_client(sync_client=True) as client:
        for key in (API_KEY, C_KEY):
            limit = client.read_global_concurrency_limit_by_name(credential_name(key))
            assert (limit.limit, limit.slot_decay_per_second) == (budget.burst, budget.per_second)
            assert key not in limit.name and limit.name.startswith("memberpulse-whop-")
