"""How long to wait before asking Whop again, and when to stop asking.

Per page: 429s are waited out as Whop says (``Retry-After``/``retry-after-ms``, else the body's "Try again
in N seconds", else backoff) until their summed wait would pass ``max_rate_limit_wait``; 5xx, timeouts and
connection errors back off exponentially with jitter, at most ``max_attempts`` attempts in all.
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memberpulse.settings import WHOP_BACKOFF_CAP_SECONDS, Settings

_TRY_AGAIN = re.compile(r"try again in\s+([0-9]+(?:\.[0-9]+)?)\s*(ms|milliseconds?|s|sec|secs|seconds?)?", re.I)


@dataclass(frozen=True)
class RetryPolicy:
    """MEMBERPULSE_WHOP_MAX_ATTEMPTS, _WHOP_MAX_RATE_LIMIT_WAIT_SECONDS and _WHOP_BACKOFF_BASE_SECONDS, as
    :meth:`from_settings` reads them (their defaults and bounds are on the Settings fields)."""

    max_attempts: int  # per page, for 5xx/timeouts/connection errors (the first try counts)
    max_rate_limit_wait: float  # per page, summed seconds spent waiting out 429s
    backoff_base: float  # first backoff; doubles per attempt
    backoff_cap: float  # the longest single backoff

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.whop_max_attempts,
            max_rate_limit_wait=settings.whop_max_rate_limit_wait_seconds,
            backoff_base=settings.whop_backoff_base_seconds,
            backoff_cap=WHOP_BACKOFF_CAP_SECONDS,
        )

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Jittered exponential backoff: uniform in [c/2, c] with c = min(cap, base·2^(n-1)), so parallel
        clients spread out but a retry never comes back instantly."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** max(0, attempt - 1))
        return (rng or random).uniform(ceiling / 2, ceiling)


def retry_after_seconds(headers: Mapping[str, str] | None, body: Any) -> float | None:
    """Whop's requested wait for a 429 in seconds: headers first, then the body's message; None if neither."""
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    ms = lowered.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    header = lowered.get("retry-after")
    if header is not None:
        try:
            return max(0.0, float(header))
        except ValueError:
            parsed = email.utils.parsedate_tz(header)
            if parsed is not None:
                return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    message = _error_message(body)
    if message:
        match = _TRY_AGAIN.search(message)
        if match:
            value = float(match.group(1))
            unit = (match.group(2) or "s").lower()
            return value / 1000 if unit.startswith("m") else value
    return None


def _error_message(body: Any) -> str | None:
    if isinstance(body, str):
        return body
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return None
