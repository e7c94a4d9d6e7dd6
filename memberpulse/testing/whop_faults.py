"""Faults a test injects into a running Whop API simulator: rate-limit storms, 5xx, slow answers, and an API
that misbehaves in its answers (cursors that never end or cycle, an endless delivery log, a malformed
delivery, another company's event).

Pass a :class:`Faults` as the simulator's ``intercept`` and its :meth:`Faults.rewrite` as its ``rewrite``
(``create_app(..., intercept=faults, rewrite=faults.rewrite)``). The intercept runs before auth and before any
data, as a load balancer would: it may delay the request or answer it in Whop's error shapes. Rules are
checked in the order they were added; each lets ``after`` matching requests pass, then hits ``count`` of them
(``None``: never stops) and is dropped when used up. The rewrite rules alter the simulator's real list answers
(every answer of their endpoint, for as long as they are set). Thread-safe: tests mutate it while the server
thread reads it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from memberpulse.whop_simulator import Endpoint, SimulatedAnswer

#: Alters one list answer: (the request's ``after``, the JSON body) → the body to send.
PageRewrite = Callable[["str | None", dict[str, Any]], dict[str, Any]]
#: Deeper than orjson (255) or any JSON column goes, well within what Python's json and the landing accept.
DEEP_NESTING = 300

FaultKind = Literal["rate_limit", "server_error", "delay"]


@dataclass
class FaultRule:
    kind: FaultKind
    count: int | None  # requests still to hit; None = a fault that never ends
    endpoint: Endpoint | None  # None = every endpoint
    after: int = 0  # matching requests to let through before the first hit
    company: str | None = None  # None = every company's requests
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
        self._rewrites: list[tuple[Endpoint, str | None, PageRewrite]] = []
        self._serial = itertools.count(1)

    async def __call__(self, endpoint: Endpoint, company_id: str | None = None) -> SimulatedAnswer | None:
        """The simulator's hook: wait out any delay rules, then answer for the first error rule (or serve)."""
        action = self.next_action(endpoint, company_id)
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
        company: str | None = None,
    ) -> FaultRule:
        """Answer 429 with Whop's body ``{"error": {"type": "rate_limit_exceeded", "message": "Try again in N
        seconds."}}`` (N = ``retry_after``) and, when ``header``, a ``Retry-After: N`` header."""
        return self._add(
            FaultRule(
                "rate_limit", count, endpoint, after, company, 429, retry_after=retry_after, retry_after_header=header
            )
        )

    def server_error(
        self,
        count: int | None = 1,
        *,
        status: int = 500,
        endpoint: Endpoint | None = None,
        after: int = 0,
        company: str | None = None,
    ) -> FaultRule:
        """Answer ``status`` (a 5xx storm when ``count`` is None), to ``company``'s requests only when given."""
        return self._add(FaultRule("server_error", count, endpoint, after, company, status))

    def slow(
        self,
        seconds: float,
        count: int | None = 1,
        *,
        endpoint: Endpoint | None = None,
        after: int = 0,
        company: str | None = None,
    ) -> FaultRule:
        """Wait ``seconds`` before answering (long enough, a client timeout)."""
        return self._add(FaultRule("delay", count, endpoint, after, company, delay=seconds))

    # --- an API that misbehaves in what it answers -----------------------------------------------------------
    def rewrite(
        self, endpoint: Endpoint, after: str | None, body: dict[str, Any], company_id: str | None = None
    ) -> dict[str, Any]:
        """The simulator's ``rewrite`` hook: each rule set for ``endpoint`` (and this company, or every company)
        alters the answer in turn."""
        with self._lock:
            rules = [
                rule for target, company, rule in self._rewrites if target == endpoint and company in (None, company_id)
            ]
        for rule in rules:
            body = rule(after, copy.deepcopy(body))
        return body

    def endless_cursor(self, endpoint: Endpoint = "memberships", *, company: str | None = None) -> None:
        """Every page says there is a next one, under a cursor never handed out before (the first page's
        records again): a listing that never ends (``company``'s only, when given)."""

        def rule(after: str | None, body: dict[str, Any]) -> dict[str, Any]:
            return _with_next(body, _cursor(endpoint, f"endless-{next(self._serial)}"))

        self._add_rewrite(endpoint, rule, company)

    def cycling_cursor(self, endpoint: Endpoint = "memberships") -> None:
        """Cursors that cycle A→B→A: the page after B points back at A."""
        handed: list[str] = []  # [A, B] as they are handed out

        def rule(after: str | None, body: dict[str, Any]) -> dict[str, Any]:
            if after is None or not handed:
                handed[:] = [body["page_info"].get("end_cursor") or _cursor(endpoint, "cycle-a")]
                return _with_next(body, handed[0])
            if after == handed[0]:
                handed[1:] = [_cursor(endpoint, "cycle-b")]
                return _with_next(body, handed[1])
            return _with_next(body, handed[0])

        self._add_rewrite(endpoint, rule)

    def endless_delivery_log(self) -> None:
        """Every page of the delivery log holds fresh attempts (new ids, sent now, each a new message) and
        says there is a next page: a log that never ends."""

        def rule(after: str | None, body: dict[str, Any]) -> dict[str, Any]:
            n = next(self._serial)
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            for i, item in enumerate(body["data"]):
                item.update(id=f"whdel_endless_{n}_{i}", sent_at=now)
                item["request_body"]["id"] = f"msg_endless_{n}_{i}"
            return _with_next(body, _cursor("deliveries", f"endless-{n}"))

        self._add_rewrite("deliveries", rule)

    def malformed_delivery(self, kind: Literal["sent_at", "nested"], *, index: int = 0) -> None:
        """One attempt of the log's first page made unusable: ``sent_at`` ``"yesterday"``, or a body nested
        ``DEEP_NESTING`` levels deep."""

        def rule(after: str | None, body: dict[str, Any]) -> dict[str, Any]:
            if after is None and len(body["data"]) > index:
                item = body["data"][index]
                if kind == "sent_at":
                    item["sent_at"] = "yesterday"
                else:
                    item["request_body"]["data"]["nested"] = _nested(DEEP_NESTING)
            return body

        self._add_rewrite("deliveries", rule)

    def other_company_delivery(self, company_id: str = "biz_someone_else", *, index: int = 0) -> None:
        """One attempt of the log's first page is an event of another company (its envelope's company)."""

        def rule(after: str | None, body: dict[str, Any]) -> dict[str, Any]:
            if after is None and len(body["data"]) > index:
                envelope = body["data"][index]["request_body"]
                envelope["company_id"] = envelope["account_id"] = company_id
            return body

        self._add_rewrite("deliveries", rule)

    def _add_rewrite(self, endpoint: Endpoint, rule: PageRewrite, company: str | None = None) -> None:
        with self._lock:
            self._rewrites.append((endpoint, company, rule))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._rewrites.clear()

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def _add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def next_action(self, endpoint: Endpoint, company_id: str | None = None) -> FaultAction:
        """Consume the rules that hit this request; delays add up, the first error rule decides the answer."""
        delay = 0.0
        with self._lock:
            for rule in self._rules:
                if rule.endpoint not in (None, endpoint) or rule.company not in (None, company_id) or rule.used_up:
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


def _cursor(endpoint: str, tag: str) -> str:
    """A cursor the simulator reads as its first page (``kind:0:tag``), unique by its tag."""
    return base64.urlsafe_b64encode(f"{endpoint}:0:{tag}".encode()).decode().rstrip("=")


def _with_next(body: dict[str, Any], cursor: str) -> dict[str, Any]:
    body["page_info"] = {**body["page_info"], "end_cursor": cursor, "has_next_page": True}
    return body


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"end": True}
    for _ in range(depth):
        value = {"a": value}
    return value
