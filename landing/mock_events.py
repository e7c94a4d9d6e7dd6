"""Mock Whop webhooks, signed the way Whop signs them: for ``send-test``, the demo's simulated members, tests.

Two envelope shapes, as Whop sends them:

- the legacy ``action`` envelope of the TypeScript webhook guide this project started from:
``membership.went_valid``, ``membership.accessed``,
  ``membership.went_invalid`` — exactly the payloads in the user's guide;
- the current v1 ``type`` envelope: ``membership.activated``, ``membership.deactivated`` (unpinned ``data``
  shape: nested ``user``/``company``/``product``, ``renewal_period_*``).

``membership.accessed`` is not a real Whop event; that guide's tooling sends it, so we do too.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from memberpulse.contracts.events import SUPPORTED_EVENTS, TEST_ID_PREFIX
from memberpulse.landing.verify import sign_legacy, sign_standard

Payload = dict[str, Any]


@dataclass(frozen=True, slots=True)
class MockMember:
    """Who a mock webhook is about. The defaults match that guide's example payloads."""

    membership_id: str = "membership_xxx"
    user_id: str = "user_xxx"
    company_id: str = "biz_xxx"
    email: str = "member@example.com"
    username: str = "membername"
    name: str = "Member Name"
    product_id: str = "prod_xxx"
    plan_id: str = "plan_xxx"


def iso(moment: datetime) -> str:
    """Whop's ISO 8601 form: UTC, milliseconds, ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: The member ``send-test`` writes about: the guide's example, with ids marked as a test's (never a real member).
TEST_MEMBER = MockMember(
    membership_id=f"{TEST_ID_PREFIX}membership_xxx", user_id=f"{TEST_ID_PREFIX}user_xxx", company_id="biz_xxx"
)


def new_webhook_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def new_test_webhook_id() -> str:
    """A webhook id marked as a test's (``send-test``), never one Whop would send."""
    return f"{TEST_ID_PREFIX}msg_{uuid.uuid4().hex}"


# --- the guide's three events (action envelope) --------------------------------------------------------------


def went_valid(member: MockMember, *, created_at: datetime) -> Payload:
    return {
        "action": "membership.went_valid",
        "data": {
            "id": member.membership_id,
            "user_id": member.user_id,
            "company_id": member.company_id,
            "email": member.email,
            "username": member.username,
            "created_at": iso(created_at),
        },
    }


def accessed(member: MockMember, *, accessed_at: datetime) -> Payload:
    return {
        "action": "membership.accessed",
        "data": {
            "id": member.membership_id,
            "user_id": member.user_id,
            "company_id": member.company_id,
            "accessed_at": iso(accessed_at),
        },
    }


def went_invalid(member: MockMember, *, expired_at: datetime) -> Payload:
    return {
        "action": "membership.went_invalid",
        "data": {
            "id": member.membership_id,
            "user_id": member.user_id,
            "company_id": member.company_id,
            "expired_at": iso(expired_at),
        },
    }


# --- current v1 events (type envelope) ----------------------------------------------------------------------


def _v1_membership(member: MockMember, *, status: str, created_at: datetime, updated_at: datetime) -> Payload:
    renewal_start = max(created_at, updated_at - timedelta(days=30))
    return {
        "id": member.membership_id,
        "status": status,
        "created_at": iso(created_at),
        "updated_at": iso(updated_at),
        "canceled_at": iso(updated_at) if status in ("canceled", "expired") else None,
        "cancel_at_period_end": False,
        "renewal_period_start": iso(renewal_start),
        "renewal_period_end": iso(renewal_start + timedelta(days=30)),
        "manage_url": f"https://whop.com/orders/{member.membership_id}/manage",
        "license_key": None,
        "metadata": {},
        "currency": "usd",
        "company": {"id": member.company_id, "title": "Mock Company"},
        "product": {"id": member.product_id, "title": "Mock Product"},
        "plan": {"id": member.plan_id},
        "user": {"id": member.user_id, "username": member.username, "name": member.name, "email": member.email},
    }


def _v1_envelope(event_type: str, member: MockMember, *, at: datetime, data: Payload, event_id: str) -> Payload:
    return {
        "id": event_id,
        "api_version": "v1",
        "api_version_date": "2025-10-01",
        "type": event_type,
        "timestamp": iso(at),
        "data": data,
        "account_id": member.company_id,
    }


def activated(member: MockMember, *, at: datetime, event_id: str | None = None) -> Payload:
    data = _v1_membership(member, status="active", created_at=at, updated_at=at)
    return _v1_envelope("membership.activated", member, at=at, data=data, event_id=event_id or new_webhook_id())


def deactivated(
    member: MockMember,
    *,
    at: datetime,
    created_at: datetime,
    status: str = "canceled",
    event_id: str | None = None,
) -> Payload:
    """``data.created_at`` is the membership's original creation time, as Whop sends it; ``at`` is the event."""
    data = _v1_membership(member, status=status, created_at=created_at, updated_at=at)
    return _v1_envelope("membership.deactivated", member, at=at, data=data, event_id=event_id or new_webhook_id())


def mock_event(
    event_type: str, member: MockMember | None = None, *, at: datetime | None = None, event_id: str | None = None
) -> Payload:
    """The mock payload for ``event_type`` at ``at`` (default now); ``event_id`` is the v1 envelope's ``id``
    (the webhook id). ``ValueError`` for an unknown type."""
    member = member or MockMember()
    at = at or datetime.now(UTC)
    if event_type == "membership.went_valid":
        return went_valid(member, created_at=at)
    if event_type == "membership.accessed":
        return accessed(member, accessed_at=at)
    if event_type == "membership.went_invalid":
        return went_invalid(member, expired_at=at)
    if event_type == "membership.activated":
        return activated(member, at=at, event_id=event_id)
    if event_type == "membership.deactivated":
        return deactivated(member, at=at, created_at=at - timedelta(days=45), event_id=event_id)
    raise ValueError(f"unknown mock event {event_type!r}; one of: {', '.join(SUPPORTED_EVENTS)}")


# --- bodies and signatures ----------------------------------------------------------------------------------


def encode(payload: Payload, *, pretty: bool = False) -> bytes:
    """The body bytes to send (and sign). Compact unless ``pretty``."""
    return orjson.dumps(payload, option=orjson.OPT_INDENT_2 if pretty else 0)


def standard_headers(
    body: bytes, *, secret: str, webhook_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for ``body`` signed with ``secret`` (as Whop does: literal secret bytes)."""
    webhook_id = webhook_id or new_webhook_id()
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard(body, secret=secret, webhook_id=webhook_id, timestamp=timestamp),
    }


def legacy_headers(body: bytes, *, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """The legacy ``x-whop-signature: t=…,v1=<hex>`` header for ``body``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "x-whop-signature": sign_legacy(body, secret=secret, timestamp=timestamp),
    }


def signed_delivery(
    payload: Payload,
    *,
    secret: str,
    webhook_id: str | None = None,
    timestamp: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    """``(body, headers)`` ready to POST: the payload encoded once and signed with Standard Webhooks.

    A v1 envelope's ``id`` is used as the ``webhook-id`` unless one is given, so re-sending the same payload is
    a redelivery of the same webhook (as Whop's retries and replays are)."""
    body = encode(payload)
    envelope_id = payload.get("id")
    if webhook_id is None and payload.get("api_version") == "v1" and isinstance(envelope_id, str):
        webhook_id = envelope_id
    return body, standard_headers(body, secret=secret, webhook_id=webhook_id, timestamp=timestamp)
