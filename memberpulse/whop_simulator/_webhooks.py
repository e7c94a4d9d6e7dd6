"""The simulator's sending side: webhook endpoints that actually deliver, and Whop's delivery log.

A :class:`WebhookHub` holds the company's webhooks (``hook_…``). :meth:`WebhookHub.send` builds a message the
way Whop's v1 webhooks do (the envelope's ``id`` is the ``webhook-id``), signs it with Standard Webhooks
(HMAC-SHA256 over ``"{id}.{timestamp}.{body}"`` keyed with the secret's literal bytes, ``v1,<base64>``) and
POSTs it to the webhook's URL. Every attempt — success, an error status, a timeout or a refused connection
(``response_code`` 0) — becomes a :class:`DeliveryAttempt` in the delivery log, newest first when listed.
Replays re-send the stored body under the original ``webhook-id`` (signed anew) and point ``replayed_from``
at the attempt they repeat. No automatic retries: a test decides what happens after a failure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

Clock = Callable[[], datetime]


@dataclass
class SimWebhook:
    id: str
    url: str
    secret: str
    company_id: str
    created_at: datetime
    events: tuple[str, ...] = ("membership.activated", "membership.deactivated")
    enabled: bool = True
    consecutive_failures: int = 0
    failing_since: datetime | None = None
    last_failure_at: datetime | None = None


@dataclass(frozen=True)
class DeliveryAttempt:
    """One row of Whop's delivery log (``WebhookDelivery`` in whop-sdk)."""

    id: str  # whdel_…
    hook_id: str
    webhook_id: str  # msg_…: the envelope id and the webhook-id header
    event: str | None
    request_body: dict[str, Any]
    body: bytes  # exactly what was POSTed
    resource_id: str
    sent_at: datetime
    response_code: int  # 0: no HTTP answer (timeout, refused connection)
    response_body: dict[str, Any] | None
    success: bool
    total_time: float
    replayed_from: str | None = None


@dataclass
class WebhookHub:
    """The webhooks of one company and their delivery log. Thread-safe (the app serves from its own thread)."""

    company_id: str
    timeout: float = 2.0
    clock: Clock = field(default=lambda: datetime.now(UTC))
    hooks: dict[str, SimWebhook] = field(default_factory=dict)
    log: list[DeliveryAttempt] = field(default_factory=list)  # oldest first
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # --- set-up --------------------------------------------------------------------------------------------
    def register(
        self, url: str, *, secret: str | None = None, hook_id: str | None = None, owner: str | None = None
    ) -> SimWebhook:
        """A webhook of the hub's company, or of ``owner`` (another company's ``biz_…``, or an app's ``app_…``,
        whose webhook carries every company that installed it)."""
        hook = SimWebhook(
            id=hook_id or f"hook_{secrets.token_hex(8)}",
            url=url,
            secret=secret or "ws_" + secrets.token_hex(24),
            company_id=owner or self.company_id,
            created_at=self.clock(),
        )
        with self._lock:
            self.hooks[hook.id] = hook
        return hook

    # --- sending -------------------------------------------------------------------------------------------
    def send(self, hook_id: str, payload: dict[str, Any]) -> DeliveryAttempt:
        """Deliver a new message. A payload without an ``id`` gets one first, as every Whop v1 envelope has."""
        message = payload if isinstance(payload.get("id"), str) else {"id": f"msg_{secrets.token_hex(12)}", **payload}
        return self._attempt(self.hooks[hook_id], message, replayed_from=None)

    def send_many(self, hook_id: str, payloads: Iterable[dict[str, Any]]) -> list[DeliveryAttempt]:
        return [self.send(hook_id, p) for p in payloads]

    def replay(
        self,
        hook_id: str,
        *,
        sent_after: datetime,
        sent_before: datetime | None = None,
        failed_only: bool = False,
        events: Iterable[str] | None = None,
    ) -> list[DeliveryAttempt]:
        """Re-send each message of the window once (its latest attempt), optionally only the failed ones."""
        wanted = set(events) if events is not None else None
        latest: dict[str, DeliveryAttempt] = {}
        for attempt in self.deliveries(hook_id, newest_first=False):
            if attempt.sent_at < sent_after or (sent_before is not None and attempt.sent_at > sent_before):
                continue
            if wanted is None or attempt.event in wanted:
                latest[attempt.webhook_id] = attempt
        chosen = [a for a in latest.values() if not (failed_only and a.success)]
        return [self.replay_delivery(hook_id, a.id) for a in chosen]

    def replay_delivery(self, hook_id: str, delivery_id: str) -> DeliveryAttempt:
        original = self.find(hook_id, delivery_id)
        if original is None:
            raise KeyError(delivery_id)
        return self._attempt(self.hooks[hook_id], original.request_body, replayed_from=original.id)

    def test(self, hook_id: str, event: str, payload: dict[str, Any]) -> DeliveryAttempt:
        """Whop's own sample for ``event`` (``payload`` built by the caller), delivered and logged."""
        return self.send(hook_id, payload)

    # --- reading -------------------------------------------------------------------------------------------
    def deliveries(self, hook_id: str, *, newest_first: bool = True) -> list[DeliveryAttempt]:
        with self._lock:
            rows = [a for a in self.log if a.hook_id == hook_id]
        return rows[::-1] if newest_first else rows

    def find(self, hook_id: str, delivery_id: str) -> DeliveryAttempt | None:
        return next((a for a in self.deliveries(hook_id) if a.id == delivery_id), None)

    # --- internals -----------------------------------------------------------------------------------------
    def _attempt(self, hook: SimWebhook, message: dict[str, Any], *, replayed_from: str | None) -> DeliveryAttempt:
        body = orjson.dumps(message)
        webhook_id = str(message["id"])
        sent_at = self.clock()
        headers = standard_webhook_headers(body, secret=hook.secret, webhook_id=webhook_id, at=sent_at)
        started = time.perf_counter()
        status, answer = _post(hook.url, body, headers, self.timeout)
        attempt = DeliveryAttempt(
            id=f"whdel_{secrets.token_hex(10)}",
            hook_id=hook.id,
            webhook_id=webhook_id,
            event=_event_of(message),
            request_body=message,
            body=body,
            resource_id=_resource_of(message),
            sent_at=sent_at,
            response_code=status,
            response_body=answer,
            success=200 <= status < 300,
            total_time=round(time.perf_counter() - started, 6),
            replayed_from=replayed_from,
        )
        with self._lock:
            self.log.append(attempt)
            if attempt.success:
                hook.consecutive_failures, hook.failing_since = 0, None
            else:
                hook.consecutive_failures += 1
                hook.failing_since = hook.failing_since or sent_at
                hook.last_failure_at = sent_at
        return attempt


def standard_webhook_headers(body: bytes, *, secret: str, webhook_id: str, at: datetime) -> dict[str, str]:
    """The headers Whop signs a delivery with (Standard Webhooks)."""
    timestamp = int(at.timestamp())
    mac = hmac.new(secret.encode("utf-8"), f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(mac.digest()).decode("ascii"),
    }


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, dict[str, Any] | None]:
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.TimeoutException:
        return 0, {"error": "timeout", "raw_body": ""}
    except httpx.TransportError as exc:
        return 0, {"error": f"connection failed ({type(exc).__name__})", "raw_body": ""}
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return response.status_code, parsed
    return response.status_code, {"error": "non-JSON response", "raw_body": response.text[:100]}


def _event_of(message: dict[str, Any]) -> str | None:
    value = message.get("type") or message.get("action")
    return value if isinstance(value, str) else None


def _resource_of(message: dict[str, Any]) -> str:
    data = message.get("data")
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""
