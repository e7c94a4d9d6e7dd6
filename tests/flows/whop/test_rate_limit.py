"""The request budget per Whop API key: sized to nine tenths of Whop's limit, never more in any window, each key
its own, named without the key."""

from __future__ import annotations

import threading
from pathlib import Path

from memberpulse.flows.whop import LocalRateLimit, RateBudget, credential_name, local_limiter
from tests.support.whop_testkit import make_settings, most_in_any_window


class FakeClock:
    """Time that moves only when a limiter sleeps (one thread)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_budget_is_nine_tenths_of_whops_limit_as_a_burst_and_a_rate(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "http://127.0.0.1:1/api/v1")
    assert RateBudget.from_settings(settings) == RateBudget(burst=9, per_second=531 / 60, window_seconds=60.0)
    assert RateBudget.from_settings(settings).per_window == 540  # of Whop's 600 a minute
    scaled = make_settings(tmp_path, "http://127.0.0.1:1/api/v1", MEMBERPULSE_WHOP_RATE_LIMIT_REQUESTS=60,
                           MEMBERPULSE_WHOP_RATE_LIMIT_WINDOW_SECONDS=6)  # fmt: skip
    assert RateBudget.from_settings(scaled).per_window == 54


def test_no_window_ever_holds_more_turns_than_the_budget() -> None:
    budget = RateBudget(burst=9, per_second=531 / 60, window_seconds=60.0)
    clock = FakeClock()
    limiter = LocalRateLimit(budget, clock=clock, sleep=clock.sleep)
    turns = []
    for _ in range(2000):
        limiter.acquire()
        turns.append(clock.now)
    assert most_in_any_window(turns, 60.0) <= budget.per_window
    assert turns[8] - turns[0] < 1e-6 < turns[9] - turns[0]  # the burst at once, then the rate
    assert round((turns[-1] - turns[9]) / (len(turns) - 10), 6) == round(1 / budget.per_second, 6)


def test_waiting_threads_all_get_their_turn() -> None:
    limiter = LocalRateLimit(RateBudget(burst=2, per_second=200.0, window_seconds=1.0))
    done = []
    threads = [threading.Thread(target=lambda: (limiter.acquire(), done.append(1))) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(done) == 40


def test_one_limiter_per_key_in_a_process_named_without_the_key() -> None:
    budget = RateBudget(burst=9, per_second=8.85, window_seconds=60.0)
    assert local_limiter("key_one", budget) is local_limiter("key_one", budget)
    assert local_limiter("key_one", budget) is not local_limiter("key_two", budget)
    name = credential_name("apik_secret_value")
    assert "apik_secret_value" not in name and name.startswith("memberpulse-whop-") and len(name) == 33
