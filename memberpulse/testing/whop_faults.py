"""Faults a test injects into a running Whop API simulator: rate-limit storms, 5xx, slow answers.

Pass a :class:`Faults` as the simulator's ``intercept`` (``create_app(..., intercept=faults)``): before auth and
before any data, as a load balancer would, it may delay the request or answer it in Whop's error shapes.
Rules are checked in the order they were added; each lets ``after`` matching requests pass, then hits
``count`` of them (``None``: never stops) and is dropped when used up. Thread-safe: tests mutate it while the
server thread reads it.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Literal

from memberpulse.whop_simulator import Endpoint, SimulatedAnswer

FaultKind = Literal["rate_limit", "server_error", "delay"]


@dataclass
class FaultRule:
    kind: FaultKind
    count: int | None  # requests still to hit; None = a fault that never ends
    endpoint: Endpoint | None  # None = every endpoint
    after: int = 0  # matching requests to let through before the first hit
    status: int = 500
    retry_after: float | None = None  # seconds, for rate_limit
    retry_after_header: bool = True
    delay: float = 0.0  # seconds, for delay

    @property
    def used_up(self) -> bool:
        return self.count is not None and self.count <= 0


@dataclass(frozen=True)
class FaultAction:
    """What the app does to one request: sleep ``delay`` s, then answer ``status`` (None: serve normally)."""

    delay: float = 0.0
    status: int | None = None
    retry_after: float | None = None
    retry_after_header: bool = False


class Faults:
    """Runtime fault switches of one simulator app (its ``intercept``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    async def __call__(self, endpoint: Endpoint) -> SimulatedAnswer | None:
        """The simulator's hook: wait out any delay rules, then answer for the first error rule (or serve)."""
        action = self.next_action(endpoint)
        if action.delay > 0:
            await asyncio.sleep(action.delay)
        if action.status == 429:
            wait = _format_seconds(action.retry_after if action.retry_after is not None else 1.0)
            headers = {"Retry-After": wait} if action.retry_after_header else None
            body = {"error": {"type": "rate_limit_exceeded", "message": f"Try again in {wait} seconds."}}
            return SimulatedAnswer(429, body, headers)
        if action.status is not None:
            return SimulatedAnswer(
                action.status, {"error": {"type": "internal_server_error", "message": "Simulated fault."}}
            )
        return None

    def rate_limit(
        self,
        count: int | None = 1,
        *,
        retry_after: float = 1.0,
        header: bool = True,
        endpoint: Endpoint | None = None,
        after: int = 0,
    ) -> FaultRule:
        """Answer 429 with Whop's body ``{"error": {"type": "rate_limit_exceeded", "message": "Try again in N
        seconds."}}`` (N = ``retry_after``) and, when ``header``, a ``Retry-After: N`` header."""
        return self._add(
            FaultRule("rate_limit", count, endpoint, after, 429, retry_after=retry_after, retry_after_header=header)
        )

    def server_error(
        self, count: int | None = 1, *, status: int = 500, endpoint: Endpoint | None = None, after: int = 0
    ) -> FaultRule:
        return self._add(FaultRule("server_error", count, endpoint, after, status))

    def slow(
        self, seconds: float, count: int | None = 1, *, endpoint: Endpoint | None = None, after: int = 0
    ) -> FaultRule:
        """Wait ``seconds`` before answering (long enough, a client timeout)."""
        return self._add(FaultRule("delay", count, endpoint, after, delay=seconds))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def _add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def next_action(self, endpoint: Endpoint) -> FaultAction:
        """Consume the rules that hit this request; delays add up, the first error rule decides the answer."""
        delay = 0.0
        with self._lock:
            for rule in self._rules:
                if rule.endpoint not in (None, endpoint) or rule.used_up:
                    continue
                if rule.after > 0:
                    rule.after -= 1
                    continue
                if rule.count is not None:
                    rule.count -= 1
                if rule.kind == "delay":
                    delay += rule.delay
                    continue
                self._rules = [r for r in self._rules if not r.used_up]
                return FaultAction(delay, rule.status, rule.retry_after, rule.retry_after_header)
            self._rules = [r for r in self._rules if not r.used_up]
        return FaultAction(delay)


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
