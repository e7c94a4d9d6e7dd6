"""The webhook endpoint's hot path as a plain ASGI callable: verify, store durably, answer.

It is mounted inside the FastAPI app (see :mod:`memberpulse.landing.app`) but skips FastAPI's request/response models:
per request it only decodes the headers, reads the body with a running size check, verifies, parses once with
the same ``json.loads`` the SDK uses, and appends one raw record (:mod:`memberpulse.contracts.raw_record`) to the
raw store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from memberpulse.contracts.events import SUPPORTED_EVENTS
from memberpulse.contracts.quarantine import BODY_PREFIX_BYTES
from memberpulse.contracts.raw_record import encode_raw_record
from memberpulse.errors import StorageUnavailable
from memberpulse.landing.metrics import LandingMetrics, Outcome
from memberpulse.landing.quarantine import Quarantine
from memberpulse.landing.raw_store import RawStore
from memberpulse.landing.throttled_log import ThrottledLog
from memberpulse.landing.verify import SignatureRejected, VerifiedWebhook, verify_lowercased

WEBHOOK_PATH = "/api/webhooks/whop"
ALLOWED_METHODS = "GET, HEAD, POST"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("landing")


class BatchedInfoLog:
    """The per-webhook INFO lines of the TypeScript webhook guide this project started from, handed to
    ``logging`` once per event-loop turn as one record.

    Same text as one ``log.info`` per line, at a fraction of the cost: a logging record per line costs about
    as much CPU as verifying the webhook. Under load many requests finish per loop turn, so records batch up.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._lines: list[str] = []

    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def add(self, line: str) -> None:
        if not self._lines:
            asyncio.get_running_loop().call_soon(self._flush)
        self._lines.append(line)

    def _flush(self) -> None:
        lines, self._lines = self._lines, []
        self._logger.info("\n".join(lines))


_JSON_HEADERS = [(b"content-type", b"application/json")]


def parse_json(body: bytes) -> object:
    """``json.loads(body)`` as the SDK calls it (its accept/reject decision), mostly at orjson's speed.

    orjson rejects some documents ``json`` accepts (BOM, NaN, lone surrogates, UTF-16): those fall back to
    ``json``. The one thing orjson accepts that ``json`` may not is nesting deeper than ``json``'s recursion
    limit, so deeply nested bodies go straight to ``json``. Returns None when ``json`` would raise.
    """
    if body.count(b"[") + body.count(b"{") <= 512:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(body)
    except Exception:  # JSONDecodeError, UnicodeDecodeError, RecursionError on absurd nesting
        return None


def _decode_headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw:
        # ASGI names are lower-case already; the first of repeated headers wins (as Starlette's lookup).
        headers.setdefault(raw_name.decode("latin-1"), raw_value.decode("latin-1"))
    return headers


def _utf8(body: bytes) -> str | None:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _event_type(event: dict[str, Any]) -> str | None:
    """The v1 envelope's ``type``, else the legacy envelope's ``action``; None when neither is a string."""
    event_type = event.get("type")
    if isinstance(event_type, str):
        return event_type
    event_type = event.get("action")
    return event_type if isinstance(event_type, str) else None


def health_body() -> dict[str, object]:
    """The ``GET /api/webhooks/whop`` answer (as the TypeScript webhook guide this project started from gives it)."""
    return {"status": "ok", "webhook_endpoint": WEBHOOK_PATH, "supported_events": list(SUPPORTED_EVENTS)}


class WebhookEndpoint:
    """``POST`` = verify and land a webhook; any method other than GET/HEAD/POST = 405 (GET is FastAPI's)."""

    def __init__(
        self,
        *,
        keys: Sequence[bytes],
        store: RawStore,
        quarantine: Quarantine,
        metrics: LandingMetrics,
        max_body_bytes: int,
        tolerance_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = tuple(keys)
        self.store = store
        self.quarantine = quarantine
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.tolerance_seconds = tolerance_seconds
        self.clock = clock
        self.info = BatchedInfoLog(log)
        # Anyone can send rejects at will: one line per kind per 10 s, the rest counted in it and in /metrics.
        self.reject_log = ThrottledLog(log)
        self._too_large = f"body over the {max_body_bytes}-byte limit"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        if scope["method"] != "POST":
            await self._reject(
                scope, send, started, status=405, outcome="method_not_allowed", error="method not allowed",
                reason=f"{scope['method']} is not allowed here", allow=ALLOWED_METHODS,
            )  # fmt: skip
            return
        headers = _decode_headers(scope["headers"])
        body = await self._read_body(scope, receive, send, started, headers)
        if body is None:
            return  # refused as too large, or the client left: already answered or nobody to answer
        now = self.clock()
        try:
            verified = verify_lowercased(
                body, headers, keys=self.keys, now=now, tolerance_seconds=self.tolerance_seconds
            )
        except SignatureRejected as rejected:
            await self._reject(
                scope, send, started, status=403, outcome="bad_signature", error="invalid webhook signature",
                reason=rejected.reason, headers=headers, body=body, body_bytes=len(body),
            )  # fmt: skip
            return
        # The signature is good; the body must still be UTF-8 text holding a JSON object (as the SDK requires).
        text = _utf8(body)
        event = parse_json(body) if text is not None else None
        if text is None or not isinstance(event, dict):
            await self._reject(
                scope, send, started, status=400, outcome="bad_body", error="invalid webhook body",
                reason="body is not a UTF-8 JSON object", headers=headers, body=body, body_bytes=len(body),
            )  # fmt: skip
            return
        event_type = _event_type(event)
        if self.info.enabled():
            self.info.add(f"[Webhook] Validated webhook: {event_type}")
        await self._store(send, started, verified, now, event_type, text)

    async def _read_body(
        self, scope: Scope, receive: Receive, send: Send, started: float, headers: dict[str, str]
    ) -> bytes | None:
        """The whole body, or None once a too-large body was refused (413) or the client disconnected.

        A declared Content-Length over the limit is refused before reading a byte; a chunked body, or a
        Content-Length that lied, is counted as it streams."""
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse_too_large(scope, send, started, headers, b"", int(declared))
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client left before sending the whole body: nothing to store or answer
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._refuse_too_large(scope, send, started, headers, b"".join(chunks) or chunk, size)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _refuse_too_large(
        self, scope: Scope, send: Send, started: float, headers: dict[str, str], body: bytes, size: int
    ) -> None:
        await self._reject(
            scope, send, started, status=413, outcome="too_large", error="payload too large",
            reason=self._too_large, headers=headers, body=body, body_bytes=size, close=True,
        )  # fmt: skip

    async def _store(
        self, send: Send, started: float, verified: VerifiedWebhook, now: float, event_type: str | None, text: str
    ) -> None:
        """Append the raw record durably, then answer 200 (or 503 when storage is down, so Whop retries)."""
        received = datetime.fromtimestamp(now, tz=UTC)
        line = encode_raw_record(verified.webhook_id, received, verified.signed_at, verified.scheme, event_type, text)
        try:
            stored = await self.store.append(verified.webhook_id, line, day=received.date())
        except StorageUnavailable as exc:
            log.error("[Webhook] Storage unavailable, answering 503 so Whop retries: %s", exc)
            await self._respond(send, 503, {"error": "storage unavailable, retry later"}, [(b"retry-after", b"10")])
            self.metrics.observe_request("storage_unavailable", time.perf_counter() - started)
            return
        elapsed = time.perf_counter() - started
        duration_ms = round(elapsed * 1000)
        if self.info.enabled():
            if not stored:
                self.info.add(f"[Webhook] Duplicate webhook {verified.webhook_id}: already stored")
            self.info.add(f"[Webhook] Processed in {duration_ms}ms")
        await self._respond(send, 200, {"received": True, "event": event_type, "duration_ms": duration_ms})
        self.metrics.observe_request("stored" if stored else "duplicate", elapsed)

    async def _reject(
        self,
        scope: Scope,
        send: Send,
        started: float,
        *,
        status: int,
        outcome: Outcome,
        error: str,
        reason: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        body_bytes: int = 0,
        allow: str | None = None,
        close: bool = False,
    ) -> None:
        """Answer ``status`` with a JSON error, log a warning, and put the metadata in quarantine."""
        client = scope.get("client")
        remote = client[0] if client else None  # the real sender: uvicorn applies trusted X-Forwarded-For
        kept = self.quarantine.record(
            status=status,
            reason=reason,
            headers=headers or {},
            body_prefix=body[:BODY_PREFIX_BYTES],
            body_bytes=body_bytes,
            remote=remote,
        )
        self.metrics.observe_quarantine(kept)
        self.reject_log.warning(f"reject-{status}", "[Webhook] Rejected with %d from %s: %s", status, remote, reason)
        extra: list[tuple[bytes, bytes]] = []
        if allow:
            extra.append((b"allow", allow.encode()))
        if close:  # the unread rest of an oversized body must not be parsed as the next request
            extra.append((b"connection", b"close"))
        await self._respond(send, status, {"error": error, "detail": reason}, extra)
        self.metrics.observe_request(outcome, time.perf_counter() - started)

    @staticmethod
    async def _respond(
        send: Send, status: int, payload: dict[str, Any], extra_headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        content = orjson.dumps(payload)
        headers = [*_JSON_HEADERS, (b"content-length", str(len(content)).encode())]
        if extra_headers:
            headers.extend(extra_headers)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})
