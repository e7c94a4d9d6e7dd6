"""``memberpulse send-test EVENT|all``: the ``pnpm test:webhook`` of
the TypeScript webhook guide this project started from.

Builds a mock event, signs it with the first configured secret (Standard Webhooks, as Whop signs), posts it,
and prints the same sections as that guide: payload, signature, where it went, response status and body, and a
success or failure line. Exit code 0 only when every post was answered 200.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

import httpx

from memberpulse.contracts.events import SUPPORTED_EVENTS
from memberpulse.errors import ExitCode, InvalidInput
from memberpulse.landing.mock_events import TEST_MEMBER, encode, mock_event, new_test_webhook_id, standard_headers
from memberpulse.settings import Settings


def send_test(event: str, *, url: str, settings: Settings, out: TextIO | None = None) -> int:
    """Send one mock ``event`` (or ``all`` of them) to ``url``; 0 when every answer was 200, else 1."""
    stream = out or sys.stdout
    events = list(SUPPORTED_EVENTS) if event == "all" else [event]
    unknown = [e for e in events if e not in SUPPORTED_EVENTS]
    if unknown:
        raise InvalidInput(
            f"unknown event {unknown[0]!r}", value=unknown[0], hint=f"use one of {', '.join(SUPPORTED_EVENTS)} or all"
        )
    secret = settings.require_webhook_secrets()[0]
    failures = 0
    with httpx.Client(timeout=30) as client:
        for name in events:
            failures += not _send_one(client, name, url=url, secret=secret, out=stream)
    if len(events) > 1:
        print(f"{len(events) - failures}/{len(events)} webhooks accepted", file=stream)
    return ExitCode.OK if failures == 0 else ExitCode.FAILED


def _send_one(client: httpx.Client, event: str, *, url: str, secret: str, out: TextIO) -> bool:
    # Test ids (``test_`` prefix): stored like any webhook, kept out of the published members by reconcile.
    webhook_id = new_test_webhook_id()
    payload = mock_event(event, TEST_MEMBER, event_id=webhook_id)
    body = encode(payload)
    headers = standard_headers(body, secret=secret, webhook_id=webhook_id)
    signature = headers["webhook-signature"]
    print(f"🧪 Testing Webhook: {event}\n", file=out)
    print("📦 Payload:", file=out)
    print(json.dumps(payload, indent=2), file=out)
    print(f"\n🔐 Signature: {signature[:19]}...", file=out)
    print(f"📍 Sending to: {url}\n", file=out)
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        print(f"❌ Could not reach {url}: {exc.__class__.__name__}: {exc}", file=out)
        print("   Is the endpoint running? Start it with: memberpulse serve\n", file=out)
        return False
    print(f"📊 Response Status: {response.status_code}", file=out)
    print("📋 Response Body:", file=out)
    try:
        print(json.dumps(response.json(), indent=2), file=out)
    except ValueError:
        print(response.text[:2000], file=out)
    if response.status_code == 200:
        print("\n✅ Webhook processed successfully!\n", file=out)
        return True
    hint = " (check that WHOP_WEBHOOK_SECRET matches the server's)" if response.status_code == 403 else ""
    print(f"\n❌ Webhook failed with status {response.status_code}{hint}\n", file=out)
    return False
