"""``memberpulse send-test EVENT|all``: sign mock webhooks, post them, and print the sections of the TypeScript
webhook guide's ``pnpm test:webhook`` (payload, signature, where it went, the answer, a success or failure line).
Exit 0 only when every post was answered 200.

``--via-whop``: Whop sends its own sample to the configured webhook instead, and the answer Whop got says
whether it landed (exit 0) or not (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from memberpulse.errors import ExitCode
from memberpulse.landing import EndpointReply, MockWebhookSender, SignedMockWebhook, events_to_send
from memberpulse.settings import Settings


def command(args: argparse.Namespace, settings: Settings) -> int:
    if args.via_whop:
        return send_test_via_whop(args.event, settings=settings)
    return send_test(args.event, url=args.url, settings=settings, cacert=args.cacert)


def send_test(
    event: str, *, url: str, settings: Settings, out: TextIO | None = None, cacert: Path | None = None
) -> int:
    """Send one mock ``event`` (or ``all`` of them) to ``url``, each shown as it goes; 0 when every answer was
    200, else 1. An unknown event, a missing secret or an unusable ``cacert`` stops it before anything is
    printed or sent (exit 2, one line)."""
    stream = out or sys.stdout
    events = events_to_send(event)
    accepted = 0
    with MockWebhookSender(url=url, settings=settings, cacert=cacert) as sender:
        for name in events:
            webhook = sender.sign(name)
            _show_request(webhook, url, stream)
            reply = sender.post(webhook)
            _show_reply(reply, stream)
            accepted += reply.accepted
    if len(events) > 1:
        print(f"{accepted}/{len(events)} webhooks accepted", file=stream)
    return ExitCode.OK if accepted == len(events) else ExitCode.FAILED


def _show_request(webhook: SignedMockWebhook, url: str, out: TextIO) -> None:
    print(f"🧪 Testing Webhook: {webhook.event}\n", file=out)
    print("📦 Payload:", file=out)
    print(json.dumps(webhook.payload, indent=2), file=out)
    print(f"\n🔐 Signature: {webhook.signature[:19]}...", file=out)
    print(f"📍 Sending to: {url}\n", file=out)


def _show_reply(reply: EndpointReply, out: TextIO) -> None:
    if reply.status is None:
        print(f"❌ {reply.problem}", file=out)
        print(f"   {reply.hint}\n", file=out)
        return
    print(f"📊 Response Status: {reply.status}", file=out)
    print("📋 Response Body:", file=out)
    try:
        print(json.dumps(json.loads(reply.text), indent=2), file=out)
    except ValueError:
        print(reply.text[:2000], file=out)
    if reply.accepted:
        print("\n✅ Webhook processed successfully!\n", file=out)
        return
    hint = " (check that WHOP_WEBHOOK_SECRET matches the server's)" if reply.status == 403 else ""
    print(f"\n❌ Webhook failed with status {reply.status}{hint}\n", file=out)


def send_test_via_whop(event: str, *, settings: Settings, out: TextIO | None = None) -> int:
    """0 when the landing answered Whop's sample with 2xx (stored durably), 1 otherwise; 2/3 as any Whop call."""
    from memberpulse.flows.recover import WhopWebhook, send_whop_sample  # only now: the local send-test stays light

    stream = out or sys.stdout

    def asking(webhook: WhopWebhook) -> None:
        print(f"🧪 Asking Whop to send its {event} sample to webhook {webhook.id}", file=stream)
        print(f"📍 Whop sends to: {webhook.url}\n", file=stream)

    sample = send_whop_sample(event, settings=settings, on_webhook=asking)
    print(f"📊 Response Status (as Whop saw it): {sample.status or 'no answer'}", file=stream)
    if sample.body:
        print(f"📋 Response Body: {sample.body[:2000]}", file=stream)
    if sample.landed:
        print("\n✅ Whop's sample landed: the endpoint stored it and answered 2xx.\n", file=stream)
        return ExitCode.OK
    reason = "the endpoint was not reached" if not sample.status else f"the endpoint answered {sample.status}"
    hint = " (is WHOP_WEBHOOK_SECRET the secret Whop shows for this webhook?)" if sample.status in (401, 403) else ""
    print(f"\n❌ Whop's sample did not land: {reason}{hint}\n", file=stream)
    return ExitCode.FAILED
