"""Webhook landing: verify each Whop webhook and store it raw and durably before answering.

Public surface (everything else is private to the package):

- ``create_app(settings) -> FastAPI`` and ``serve(settings, *, host, port)`` — the endpoint;
- ``MockWebhookSender`` — signs and posts mock webhooks, the ``pnpm test:webhook`` of the TypeScript webhook
  guide this project started from (``memberpulse send-test`` shows what it sent and the answer);
- ``verify_webhook`` / ``SignatureRejected`` / ``VerifiedWebhook`` — the pure verifier;
- ``MockMember``, ``mock_event``, ``signed_delivery``, ``standard_headers``, ``legacy_headers`` and the
  per-event builders in :mod:`memberpulse.landing.mock_events` — realistic, correctly signed webhooks;
- ``RawStore`` — the durable, group-committing segment writer.

The web stack (FastAPI, uvicorn) is imported only when ``create_app``/``serve`` are first used, so
``memberpulse send-test`` and the demo's signer stay light.
"""

from __future__ import annotations

if __name__ != "memberpulse.landing":  # landing/ is installed only under the memberpulse namespace
    raise ImportError(f"import memberpulse.landing, not {__name__}")

from typing import TYPE_CHECKING, Any

from memberpulse.contracts.events import SUPPORTED_EVENTS
from memberpulse.landing.mock_events import (
    MockMember,
    legacy_headers,
    mock_event,
    signed_delivery,
    standard_headers,
)
from memberpulse.landing.verify import SignatureRejected, VerifiedWebhook, sign_legacy, sign_standard, verify_webhook

if TYPE_CHECKING:
    from memberpulse.landing.app import create_app
    from memberpulse.landing.raw_store import RawStore
    from memberpulse.landing.send_test import EndpointReply, MockWebhookSender, SignedMockWebhook, events_to_send
    from memberpulse.landing.server import serve

_LAZY = {
    "create_app": "memberpulse.landing.app",
    "serve": "memberpulse.landing.server",
    "MockWebhookSender": "memberpulse.landing.send_test",
    "EndpointReply": "memberpulse.landing.send_test",
    "SignedMockWebhook": "memberpulse.landing.send_test",
    "events_to_send": "memberpulse.landing.send_test",
    "RawStore": "memberpulse.landing.raw_store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'landing' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)


__all__ = [
    "SUPPORTED_EVENTS",
    "EndpointReply",
    "MockMember",
    "MockWebhookSender",
    "RawStore",
    "SignatureRejected",
    "SignedMockWebhook",
    "VerifiedWebhook",
    "create_app",
    "events_to_send",
    "legacy_headers",
    "mock_event",
    "serve",
    "sign_legacy",
    "sign_standard",
    "signed_delivery",
    "standard_headers",
    "verify_webhook",
]
