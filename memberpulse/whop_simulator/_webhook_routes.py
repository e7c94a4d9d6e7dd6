"""The simulator's ``/webhooks`` endpoints, shaped as whop-sdk 2.6.0's webhooks client parses them.

``GET /webhooks`` (``account_id``, ``first``/``after``) → ``WebhookListItem`` page; ``GET /webhooks/{id}`` →
``Webhook``; ``GET /webhooks/{id}/deliveries`` (newest first, ``first``/``after``) → ``WebhookDelivery`` page;
``POST /webhooks/{id}/replay`` (``sent_after``, ``sent_before``, ``failed_only``, ``events``) → ``{"queued"}``;
``POST /webhooks/{id}/deliveries/{delivery_id}/replay`` and ``POST /webhooks/{id}/test`` (``event``) →
``{"status", "success", "body"}``. An unknown webhook or delivery id is a 404 in Whop's error shape. Sending
happens on a worker thread, so the app keeps serving while a delivery waits on a slow endpoint.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from memberpulse.whop_simulator._app import (
    DEFAULT_PAGE_SIZE,
    Endpoint,
    LoggedRequest,
    SimulatorState,
    bearer_token,
    decode_cursor,
    encode_cursor,
    guard,
    iso,
    json_bytes,
)
from memberpulse.whop_simulator._webhooks import DeliveryAttempt, SimWebhook, WebhookHub

_TESTABLE = ("membership.activated", "membership.deactivated", "membership.went_valid", "membership.went_invalid")


def add_webhook_routes(app: FastAPI, state: SimulatorState, base: str) -> None:
    @app.get(f"{base}/webhooks")
    async def list_webhooks(request: Request) -> Response:
        return await _serve(state, request, "webhooks", _list_webhooks)

    @app.get(f"{base}/webhooks/{{hook_id}}")
    async def retrieve_webhook(request: Request, hook_id: str) -> Response:
        return await _serve(state, request, "webhooks", lambda hub, r: _retrieve(hub, hook_id))

    @app.get(f"{base}/webhooks/{{hook_id}}/deliveries")
    async def list_deliveries(request: Request, hook_id: str) -> Response:
        return await _serve(state, request, "deliveries", lambda hub, r: _deliveries(state, hub, hook_id, r))

    @app.post(f"{base}/webhooks/{{hook_id}}/replay")
    async def replay(request: Request, hook_id: str) -> Response:
        body = await _json(request)
        return await _serve(state, request, "replay", lambda hub, r: _replay(hub, hook_id, body))

    @app.post(f"{base}/webhooks/{{hook_id}}/deliveries/{{delivery_id}}/replay")
    async def replay_delivery(request: Request, hook_id: str, delivery_id: str) -> Response:
        return await _serve(state, request, "replay", lambda hub, r: _replay_one(hub, hook_id, delivery_id))

    @app.post(f"{base}/webhooks/{{hook_id}}/test")
    async def test(request: Request, hook_id: str) -> Response:
        body = await _json(request)
        return await _serve(state, request, "test", lambda hub, r: _test(hub, hook_id, body))


Answer = tuple[int, Any]


async def _serve(state: SimulatorState, request: Request, endpoint: Endpoint, handler: Any) -> Response:
    params = request.query_params
    company_id = params.get("account_id")
    arrived = time.monotonic()
    credential = state.credential(bearer_token(request)) or ""
    refused = await guard(state, request, endpoint, company_id)
    if refused is not None:
        status, body, headers = refused
    else:
        assert state.webhooks is not None
        headers = None
        try:
            status, body = await asyncio.to_thread(handler, state.webhooks, request)
        except ValueError as exc:
            status, body = 400, {"error": {"type": "bad_request", "message": str(exc)}}
    first = params.get("first")
    state.log(
        LoggedRequest(endpoint, int(first) if first and first.isdigit() else None, params.get("after"),
                      company_id, status, arrived, credential)
    )  # fmt: skip
    return Response(json_bytes(body), status_code=status, media_type="application/json", headers=headers)


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        doc = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _not_found(what: str, value: str) -> Answer:
    return 404, {"error": {"type": "not_found", "message": f"No {what} found with id {value}."}}


def _page(items: list[Any], request: Request, kind: str) -> tuple[list[Any], dict[str, Any]]:
    params = request.query_params
    first = int(params.get("first") or DEFAULT_PAGE_SIZE)
    if first < 1:
        raise ValueError("first must be >= 1")
    after = params.get("after")
    offset = decode_cursor(after, kind) if after else 0
    chunk = items[offset : offset + first]
    end = offset + len(chunk)
    has_next = end < len(items)
    return chunk, {
        "start_cursor": encode_cursor(kind, offset) if chunk else None,
        "end_cursor": encode_cursor(kind, end) if has_next else None,
        "has_next_page": has_next,
        "has_previous_page": offset > 0,
    }


def _list_webhooks(hub: WebhookHub, request: Request) -> Answer:
    """The account's own webhooks (every webhook when no account is named), newest first."""
    account = request.query_params.get("account_id")
    hooks = [h for h in hub.hooks.values() if account in (None, h.company_id)]
    hooks = sorted(hooks, key=lambda h: h.created_at, reverse=True)
    chunk, page_info = _page(hooks, request, "webhooks")
    return 200, {"data": [_hook_json(h) for h in chunk], "page_info": page_info}


def _retrieve(hub: WebhookHub, hook_id: str) -> Answer:
    hook = hub.hooks.get(hook_id)
    if hook is None:
        return _not_found("webhook", hook_id)
    return 200, {**_hook_json(hook), "testable_events": list(_TESTABLE)}


def _deliveries(state: SimulatorState, hub: WebhookHub, hook_id: str, request: Request) -> Answer:
    if hook_id not in hub.hooks:
        return _not_found("webhook", hook_id)
    chunk, page_info = _page(hub.deliveries(hook_id), request, "deliveries")
    body = {"data": [_delivery_json(a) for a in chunk], "page_info": page_info}
    return 200, state.rewritten("deliveries", request.query_params.get("after"), body)


def _replay(hub: WebhookHub, hook_id: str, body: dict[str, Any]) -> Answer:
    if hook_id not in hub.hooks:
        return _not_found("webhook", hook_id)
    if not isinstance(body.get("sent_after"), str):
        raise ValueError("sent_after is required (ISO 8601)")
    before = body.get("sent_before")
    hub.replay(
        hook_id,
        sent_after=_parse_time(body["sent_after"]),
        sent_before=_parse_time(before) if isinstance(before, str) else None,
        failed_only=bool(body.get("failed_only")),
        events=body.get("events"),
    )
    return 200, {"queued": True}


def _replay_one(hub: WebhookHub, hook_id: str, delivery_id: str) -> Answer:
    if hook_id not in hub.hooks:
        return _not_found("webhook", hook_id)
    if hub.find(hook_id, delivery_id) is None:
        return _not_found("delivery", delivery_id)
    attempt = hub.replay_delivery(hook_id, delivery_id)
    return 200, _result_json(attempt)


def _test(hub: WebhookHub, hook_id: str, body: dict[str, Any]) -> Answer:
    hook = hub.hooks.get(hook_id)
    if hook is None:
        return _not_found("webhook", hook_id)
    event = body.get("event")
    if event not in _TESTABLE:
        raise ValueError(f"event must be one of {', '.join(_TESTABLE)}")
    attempt = hub.test(hook_id, event, _sample(hook, event, hub.clock()))
    return 200, _result_json(attempt)


def _result_json(attempt: DeliveryAttempt) -> dict[str, Any]:
    answer = attempt.response_body
    return {
        "status": attempt.response_code,
        "success": attempt.success,
        "body": orjson.dumps(answer).decode() if answer is not None and attempt.response_code else "",
    }


def _hook_json(hook: SimWebhook) -> dict[str, Any]:
    return {
        "id": hook.id,
        "url": hook.url,
        "enabled": hook.enabled,
        "events": list(hook.events),
        "api_version": "v1",
        "api_version_date": None,
        "child_resource_events": False,
        "consecutive_failures": hook.consecutive_failures,
        "created_at": iso(hook.created_at),
        "disabled_at": None,
        "disabled_reason": None,
        "failing_since": iso(hook.failing_since),
        "last_failure_at": iso(hook.last_failure_at),
        "resource_id": hook.company_id,
        "webhook_secret": None,  # Whop shows it on creation only
    }


def _delivery_json(a: DeliveryAttempt) -> dict[str, Any]:
    return {
        "id": a.id,
        "event": a.event,
        "request_body": a.request_body,
        "resource_id": a.resource_id,
        "response_body": a.response_body,
        "response_code": a.response_code,
        "sent_at": iso(a.sent_at),
        "success": a.success,
        "total_time": a.total_time,
        "replayed_from": a.replayed_from,
    }


def _sample(hook: SimWebhook, event: str, now: datetime) -> dict[str, Any]:
    """Whop's test sample: a v1 envelope about a made-up membership."""
    membership = f"mem_sample{secrets.token_hex(4)}"
    status = "canceled" if event in ("membership.deactivated", "membership.went_invalid") else "active"
    return {
        "id": f"msg_{secrets.token_hex(12)}",
        "api_version": "v1",
        "type": event,
        "timestamp": iso(now),
        "account_id": hook.company_id,
        "data": {
            "id": membership,
            "status": status,
            "created_at": iso(now),
            "user": {"id": "user_sample", "username": "sample", "name": "Sample Member", "email": None},
            "company": {"id": hook.company_id},
        },
    }


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
