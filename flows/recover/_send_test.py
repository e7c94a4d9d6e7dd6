"""``memberpulse send-test --via-whop EVENT``: Whop sends its own sample to the configured webhook, and we say
whether it landed — the production end-to-end check (Whop → DNS → proxy → landing → disk)."""

from __future__ import annotations

import sys
from typing import TextIO

from memberpulse.contracts.events import SUPPORTED_EVENTS
from memberpulse.errors import ExitCode, InvalidInput
from memberpulse.flows.recover._webhook import find_webhook, require_recovery_settings
from memberpulse.flows.whop import WhopBackfillClient
from memberpulse.settings import Settings

#: Events Whop can send a sample of (``membership.accessed`` is only the guide's tooling, not Whop's).
WHOP_TEST_EVENTS = tuple(e for e in SUPPORTED_EVENTS if e != "membership.accessed")


def send_test_via_whop(event: str, *, settings: Settings, out: TextIO | None = None) -> int:
    """0 when the landing answered Whop's sample with 2xx (stored durably), 1 otherwise; 2/3 as any Whop call."""
    stream = out or sys.stdout
    if event not in WHOP_TEST_EVENTS:
        raise InvalidInput(
            f"Whop cannot send a sample of {event!r}", value=event, hint=f"use one of {', '.join(WHOP_TEST_EVENTS)}"
        )
    require_recovery_settings(settings)
    with WhopBackfillClient.from_settings(settings, job="send-test") as client:
        hook_id = find_webhook(client, settings)
        hook, _ = client.call("webhook", 1, lambda: client.sdk.webhooks.retrieve(hook_id))
        print(f"🧪 Asking Whop to send its {event} sample to webhook {hook_id}", file=stream)
        print(f"📍 Whop sends to: {hook.url}\n", file=stream)
        result, _ = client.call("test", 1, lambda: client.sdk.webhooks.test(hook_id, event=event))
    print(f"📊 Response Status (as Whop saw it): {result.status or 'no answer'}", file=stream)
    if result.body:
        print(f"📋 Response Body: {str(result.body)[:2000]}", file=stream)
    if result.success:
        print("\n✅ Whop's sample landed: the endpoint stored it and answered 2xx.\n", file=stream)
        return ExitCode.OK
    reason = "the endpoint was not reached" if not result.status else f"the endpoint answered {result.status}"
    hint = " (is WHOP_WEBHOOK_SECRET the secret Whop shows for this webhook?)" if result.status in (401, 403) else ""
    print(f"\n❌ Whop's sample did not land: {reason}{hint}\n", file=stream)
    return ExitCode.FAILED
