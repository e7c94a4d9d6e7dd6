"""Retry policy for every flow task, read straight off memberpulse's error hierarchy.

A task retries only when it failed with a :class:`~memberpulse.errors.TransientError` (Whop or the publish
target is briefly unavailable, a disk hiccup) whose ``retry_soon`` is set; a
:class:`~memberpulse.errors.FatalError` or a bug fails the run at once, because retrying it would only repeat
the failure, and so does an error whose raiser already spent its own bounded retries (``WhopGaveUp``).
"""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from memberpulse.errors import TransientError


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, TransientError) and exc.retry_soon


# Keyword arguments for @task on anything that touches the outside world: 3 retries at ~2 s, 4 s, 8 s with
# ±50 % jitter so parallel runs do not retry in lockstep. NO_CACHE: inputs are frames and settings, and
# hashing them for a cache key would cost time and could read secrets.
TRANSIENT_RETRY: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_on_transient,
    "cache_policy": NO_CACHE,
}
