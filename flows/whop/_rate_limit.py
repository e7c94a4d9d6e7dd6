"""One request budget per Whop API key, shared by every company read with that key.

Whop allows each credential 600 requests a minute (per operation; memberpulse counts every operation of a key
together, the cautious reading). A backfill or recovery spread over many companies would pass that at once, so
every HTTP attempt of :class:`WhopBackfillClient` first takes a turn from its key's limiter.

The budget (:class:`RateBudget`) is nine tenths of the limit, as a leaky bucket: ``burst`` turns at once, then
``per_second``, so no window of ``MEMBERPULSE_WHOP_RATE_LIMIT_WINDOW_SECONDS`` holds more than
``burst + per_second × window`` = nine tenths of ``MEMBERPULSE_WHOP_RATE_LIMIT_REQUESTS`` turns. The tenth left
over absorbs the time between a turn and the request reaching Whop (a request that waited in a queue arrives
with the next ones): up to a ninth of the window of such jitter keeps Whop's own count under its limit.

Two limiters hold that budget, for the two ways the backfill runs:

- :class:`LocalRateLimit` (``memberpulse backfill`` and ``recover``, plain calls in one process, no Prefect
  server): a thread-safe GCRA bucket, one per key in the process (:func:`local_limiter`).
- :class:`PrefectRateLimit` (the deployed flow): a Prefect global concurrency limit with slot decay, used through
  ``prefect.concurrency.sync.rate_limit(strict=True)``, so every worker's runs share it. It is created (or
  resized) when a run starts: a ``rate_limit`` on a limit that does not exist would, without ``strict``, only
  warn and let every request through. Its name is ``memberpulse-whop-`` and a hash of the key, never the key.
  Prefect's server decays whole slots since the limit's last change, so under contention it grants fewer
  turns than the nominal rate, never more.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from memberpulse.settings import Settings

#: The share of Whop's limit memberpulse spends: the rest absorbs jitter between a turn and Whop's count.
SHARE: Final = 0.9
NAME_PREFIX: Final = "memberpulse-whop-"


@dataclass(frozen=True)
class RateBudget:
    """``burst`` turns at once, then ``per_second``: at most ``burst + per_second × window`` in any window."""

    burst: int
    per_second: float
    window_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RateBudget:
        window = settings.whop_rate_limit_window_seconds
        budget = max(2, math.floor(settings.whop_rate_limit_requests * SHARE))
        burst = max(1, min(budget - 1, round(budget / window)))  # about one second's worth
        return cls(burst=burst, per_second=(budget - burst) / window, window_seconds=window)

    @property
    def per_window(self) -> float:
        """The most turns any window of ``window_seconds`` can hold."""
        return self.burst + self.per_second * self.window_seconds


class RequestLimiter(Protocol):
    """Blocks until one more request may go to Whop."""

    def acquire(self) -> None: ...


def credential_name(api_key: str) -> str:
    """Names a key's limit without holding the key: a prefix and the first 16 hex digits of its sha256."""
    return NAME_PREFIX + hashlib.sha256(api_key.encode()).hexdigest()[:16]


class LocalRateLimit:
    """A GCRA leaky bucket for one process: each turn reserves the next free instant and sleeps until it, so
    waiting threads go in turn and none starves. Thread-safe."""

    def __init__(
        self,
        budget: RateBudget,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.budget = budget
        self._interval = 1.0 / budget.per_second
        self._tolerance = (budget.burst - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next: float | None = None  # the theoretical arrival time of the next turn

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            due = now if self._next is None else max(self._next, now)
            wait = max(0.0, due - self._tolerance - now)
            self._next = due + self._interval
        if wait > 0:
            self._sleep(wait)


_local_lock = threading.Lock()
_local: dict[tuple[str, RateBudget], LocalRateLimit] = {}


def local_limiter(api_key: str, budget: RateBudget) -> LocalRateLimit:
    """The process's limiter for ``api_key`` (one per key and budget: a backfill and the recovery it ends with
    share it)."""
    with _local_lock:
        return _local.setdefault((credential_name(api_key), budget), LocalRateLimit(budget))


class PrefectRateLimit:
    """A Prefect global concurrency limit with slot decay: ``burst`` slots, ``per_second`` decay."""

    def __init__(self, name: str, budget: RateBudget) -> None:
        self.name = name
        self.budget = budget

    @classmethod
    def ensure(cls, api_key: str, budget: RateBudget) -> PrefectRateLimit:
        """Create the key's limit, or set it to this budget (two runs starting at once may both create it)."""
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectAlreadyExists

        limiter = cls(credential_name(api_key), budget)
        with get_client(sync_client=True) as client:
            try:
                client.upsert_global_concurrency_limit_by_name(limiter.name, budget.burst, budget.per_second)
            except ObjectAlreadyExists:
                client.upsert_global_concurrency_limit_by_name(limiter.name, budget.burst, budget.per_second)
        return limiter

    def acquire(self) -> None:
        from prefect.concurrency.sync import rate_limit

        rate_limit(self.name, occupy=1, strict=True)
