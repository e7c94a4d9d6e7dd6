"""The simulator's HTTP surface: Whop's v1 ``GET /memberships`` and ``GET /members`` list endpoints.

Shapes follow whop-sdk 2.6.0's ``Membership``/``Member`` models (the tests parse every answer with the SDK),
plus the ``user {id, username, name, email}`` object Whop's membership list items carry. Cursor pagination:
``first``/``after`` in, ``{"data": [...], "page_info": {...}}`` out, ``end_cursor`` null on the last page.
"""

from __future__ import annotations

import base64
import hmac
import json
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from memberpulse.whop_simulator._population import Population, SimMember, SimMembership
from memberpulse.whop_simulator._webhooks import WebhookHub

DEFAULT_PAGE_SIZE = 25

Endpoint = Literal["memberships", "members", "webhooks", "deliveries", "replay", "test"]


@dataclass(frozen=True)
class SimulatedAnswer:
    """An answer an ``intercept`` hook gives instead of the endpoint's own (JSON ``body``)."""

    status: int
    body: Mapping[str, Any]
    headers: dict[str, str] | None = None


#: Called first for every request (its endpoint and company), before auth, as a load balancer in front of Whop
#: would be: may wait, and may answer instead of the endpoint (None: serve normally).
Intercept = Callable[[Endpoint, "str | None"], Awaitable[SimulatedAnswer | None]]

#: Called with every successful list answer (endpoint, the request's ``after``, the JSON body, the company) and
#: returns the body to send: a misbehaving API (cursors that never end, odd records) built on real pages.
Rewrite = Callable[[Endpoint, "str | None", dict[str, Any], "str | None"], dict[str, Any]]


@dataclass(frozen=True)
class LoggedRequest:
    endpoint: Endpoint
    first: int | None
    after: str | None
    company_id: str | None
    status: int
    at: float  # time.monotonic() when the request arrived
    credential: str = ""  # which key asked (a label: ``app``, or the company whose own key it is)


@dataclass
class SimulatorState:
    """Everything a running app reads per request; reachable as ``app.state.whop_simulator``.

    Several companies (``populations``): ``api_key`` is an app's key, reading every company that installed the
    app (not in ``uninstalled``); ``company_keys`` are companies' own keys, each reading its company only. A
    company that uninstalled the app answers 403 to the app's key. With ``rate_limit`` = (N, seconds) each key
    may make N requests in any ``seconds``; past that Whop's 429 (``rate_limit_exceeded``, "Try again in S
    seconds.", no ``Retry-After``: Whop's is unconfirmed), which does not count."""

    population: Population  # the first company's
    api_key: str
    intercept: Intercept | None = None
    max_page_size: int | None = None  # Whop caps ``first``; None: no cap
    webhooks: WebhookHub | None = None  # the sending side and its delivery log (``/webhooks`` endpoints)
    rewrite: Rewrite | None = None  # alters list answers (``memberpulse.testing.whop_faults``)
    populations: dict[str, Population] = field(default_factory=dict)
    company_keys: dict[str, str] = field(default_factory=dict)  # company -> its own key
    uninstalled: set[str] = field(default_factory=set)
    rate_limit: tuple[int, float] | None = None
    requests: list[LoggedRequest] = field(default_factory=list)
    _recent: dict[str, deque[float]] = field(default_factory=dict, repr=False)  # key label -> request times
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.populations = self.populations or {self.population.company_id: self.population}

    def log(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.requests.append(entry)

    def rewritten(
        self, endpoint: Endpoint, after: str | None, body: dict[str, Any], company_id: str | None = None
    ) -> dict[str, Any]:
        return body if self.rewrite is None else self.rewrite(endpoint, after, body, company_id)

    def uninstall(self, company_id: str) -> None:
        """The company removes the app: the app's key gets 403 for it from now on."""
        with self._lock:
            self.uninstalled.add(company_id)

    def credential(self, token: str) -> str | None:
        """Which key ``token`` is (``app``, or the company it belongs to), None for no key of this Whop."""
        if hmac.compare_digest(token.encode(), self.api_key.encode()):
            return "app"
        return next((c for c, k in self.company_keys.items() if hmac.compare_digest(token.encode(), k.encode())), None)

    def may_read(self, credential: str, company_id: str) -> bool:
        if company_id not in self.populations:
            return False
        if credential == "app":
            return company_id not in self.uninstalled
        return credential == company_id

    def throttle(self, credential: str, now: float) -> float | None:
        """Count one request of ``credential``; past its limit, the seconds until one more would fit instead."""
        if self.rate_limit is None:
            return None
        most, seconds = self.rate_limit
        with self._lock:
            recent = self._recent.setdefault(credential, deque())
            while recent and recent[0] <= now - seconds:
                recent.popleft()
            if len(recent) >= most:
                return recent[0] + seconds - now
            recent.append(now)
        return None

    def served(self, endpoint: Endpoint | None = None, status: int | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (endpoint is None or r.endpoint == endpoint) and (status is None or r.status == status)
            ]


def create_app(
    population: Population | Sequence[Population],
    *,
    api_key: str,
    intercept: Intercept | None = None,
    max_page_size: int | None = None,
    base_path: str = "/api/v1",
    webhooks: WebhookHub | None = None,
    rewrite: Rewrite | None = None,
    company_keys: Mapping[str, str] | None = None,
    rate_limit: tuple[int, float] | None = None,
) -> FastAPI:
    """A simulator of one company (a :class:`Population`) or several, reading ``api_key`` (for several, an
    app's key) and each company's own key in ``company_keys``; with ``webhooks``, it also serves that hub's
    ``/webhooks`` endpoints (list, retrieve, deliveries, replay, test); ``rewrite`` alters its list answers;
    ``rate_limit`` = (requests, seconds) per key, enforced with Whop's 429."""
    populations = [population] if isinstance(population, Population) else list(population)
    hub = webhooks or WebhookHub(populations[0].company_id)
    state = SimulatorState(
        populations[0], api_key, intercept, max_page_size, hub, rewrite,
        populations={p.company_id: p for p in populations}, company_keys=dict(company_keys or {}),
        rate_limit=rate_limit,
    )  # fmt: skip
    app = FastAPI(title="Whop API simulator (memberpulse tests and demo)", docs_url=None, redoc_url=None)
    app.state.whop_simulator = state
    base = base_path.rstrip("/")

    @app.get(f"{base}/memberships")
    async def list_memberships(request: Request) -> Response:
        return await _list(state, request, "memberships")

    @app.get(f"{base}/members")
    async def list_members(request: Request) -> Response:
        return await _list(state, request, "members")

    from memberpulse.whop_simulator._webhook_routes import add_webhook_routes

    add_webhook_routes(app, state, base)
    return app


def simulator_state(app: FastAPI) -> SimulatorState:
    state = app.state.whop_simulator
    assert isinstance(state, SimulatorState)
    return state


async def _list(state: SimulatorState, request: Request, endpoint: Endpoint) -> Response:
    params = request.query_params
    company_id = params.get("company_id") or params.get("account_id")
    after = params.get("after")
    first_raw = params.get("first")

    arrived = time.monotonic()
    credential = state.credential(bearer_token(request)) or ""

    def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        first_logged = int(first_raw) if first_raw and first_raw.isdigit() else None
        state.log(LoggedRequest(endpoint, first_logged, after, company_id, status, arrived, credential))
        return Response(json_bytes(body), status_code=status, media_type="application/json", headers=headers)

    refused = await guard(state, request, endpoint, company_id)
    if refused is not None:
        return answer(*refused)
    population = state.populations.get(company_id or "", state.population)

    try:
        first = int(first_raw) if first_raw is not None else DEFAULT_PAGE_SIZE
        offset = decode_cursor(after, endpoint) if after else 0
    except ValueError as exc:
        return answer(400, {"error": {"type": "bad_request", "message": str(exc)}})
    if first < 1:
        return answer(400, {"error": {"type": "bad_request", "message": "first must be >= 1"}})
    cap = state.max_page_size
    if cap is not None:
        first = min(first, cap)

    records: list[SimMembership] | list[SimMember] = (
        population.memberships if endpoint == "memberships" else population.members
    )
    chunk = records[offset : offset + first]
    end = offset + len(chunk)
    has_next = end < len(records)
    data = [_membership_json(r) if isinstance(r, SimMembership) else _member_json(r) for r in chunk]
    page_info = {
        "start_cursor": encode_cursor(endpoint, offset) if chunk else None,
        "end_cursor": encode_cursor(endpoint, end) if has_next else None,
        "has_next_page": has_next,
        "has_previous_page": offset > 0,
    }
    return answer(200, state.rewritten(endpoint, after, {"data": data, "page_info": page_info}, company_id))


async def guard(
    state: SimulatorState, request: Request, endpoint: Endpoint, company_id: str | None
) -> tuple[int, Any, dict[str, str] | None] | None:
    """What every endpoint checks first: the fault hook, the bearer key, the key's rate limit, the account. None:
    go on."""
    if state.intercept is not None:
        intercepted = await state.intercept(endpoint, company_id)
        if intercepted is not None:
            return intercepted.status, intercepted.body, intercepted.headers
    credential = state.credential(bearer_token(request))
    if credential is None:
        return 401, {"error": {"type": "unauthorized", "message": "Invalid or missing API key."}}, None
    wait = state.throttle(credential, time.monotonic())
    if wait is not None:
        message = f"Try again in {max(0.1, math.ceil(wait * 10) / 10):g} seconds."
        return 429, {"error": {"type": "rate_limit_exceeded", "message": message}}, None
    if company_id is not None and not state.may_read(credential, company_id):
        message = f"This API key has no access to account {company_id}."
        return 403, {"error": {"type": "forbidden", "message": message}}, None
    return None


def bearer_token(request: Request) -> str:
    authorization = request.headers.get("authorization", "")
    return authorization[7:] if authorization.lower().startswith("bearer ") else ""


def json_bytes(body: Any) -> bytes:
    """An answer's JSON; bodies nested deeper than orjson goes (a fault a test injects) through the stdlib."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        return json.dumps(body, separators=(",", ":")).encode()


def encode_cursor(endpoint: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{endpoint}:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, endpoint: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, rest = raw.partition(":")
        if kind != endpoint:
            raise ValueError
        return int(rest.split(":", 1)[0])  # ``kind:offset[:tag]``: a tag makes a cursor unique (faults)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"invalid cursor {cursor!r}") from None


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


_PRICE = {"amount": "10.00", "currency": "usd", "decimals": 2, "display_decimals": 2}


def _membership_json(m: SimMembership) -> dict[str, Any]:
    return {
        "id": m.id,
        "status": m.status,
        "created_at": iso(m.created_at),
        "updated_at": iso(m.updated_at),
        "canceled_at": iso(m.canceled_at),
        "cancel_at_period_end": m.cancel_at_period_end,
        "account": {
            "id": m.company_id,
            "route": "memberpulse-demo",
            "title": "memberpulse demo",
            "logo_url": None,
        },
        "product": {"id": m.product_id, "title": "Community access", "logo_url": None},
        "product_id": m.product_id,
        "plan_id": m.plan_id,
        "user_id": m.user.id,
        "member_id": m.member_id,
        "metadata": {},
        "initial_price": _PRICE,
        "renewal_price": _PRICE,
        "billing_period_days": 30,
        "manage_url": None,
        "member": None,
        "user": {"id": m.user.id, "username": m.user.username, "name": m.user.name, "email": m.user.email},
    }


def _member_json(m: SimMember) -> dict[str, Any]:
    return {
        "id": m.id,
        "account_id": m.company_id,
        "access_level": "customer" if m.status == "joined" else "no_access",
        "status": m.status,
        "created_at": iso(m.created_at),
        "joined_at": iso(m.joined_at),
        "last_accessed_at": iso(m.last_accessed_at),
        "most_recent_action": m.most_recent_action,
        "most_recent_action_at": iso(m.most_recent_action_at),
        "display_name": m.user.name or m.user.username,
        "email": m.user.email,
        "phone_number": None,
        "token_balance": 0.0,
        "usd_total_spent": {
            "amount": m.usd_total_spent,
            "currency": "usd",
            "decimals": 2,
            "display_decimals": 2,
        },
        "user": {
            "id": m.user.id,
            "username": m.user.username,
            "name": m.user.name,
            "profile_picture": {"url": f"https://example.com/avatars/{m.user.id}.png"},
        },
    }
