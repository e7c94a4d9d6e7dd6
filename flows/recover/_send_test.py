"""``memberpulse send-test --via-whop EVENT``: Whop sends its own sample to the configured webhook, and the
answer it got says whether it landed — the production end-to-end check (Whop → DNS → proxy → landing → disk)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from memberpulse.contracts.events import SUPPORTED_EVENTS
from memberpulse.errors import InvalidInput
from memberpulse.flows.recover._webhook import find_webhook, require_recovery_settings
from memberpulse.flows.whop import WhopBackfillClient
from memberpulse.settings import Settings

#: Events Whop can send a sample of (``membership.accessed`` is only the guide's tooling, not Whop's).
WHOP_TEST_EVENTS = tuple(e for e in SUPPORTED_EVENTS if e != "membership.accessed")


@dataclass(frozen=True)
class WhopWebhook:
    """The company's webhook Whop sends to: its id and the URL it posts to."""

    id: str
    url: str


@dataclass(frozen=True)
class WhopSample:
    """What Whop saw when it sent its sample of ``event`` to ``webhook``: the endpoint's status (None: no
    answer) and body; ``landed`` when it answered 2xx (the landing stored it durably)."""

    event: str
    webhook: WhopWebhook
    status: int | None
    body: str | None
    landed: bool


def send_whop_sample(
    event: str, *, settings: Settings, on_webhook: Callable[[WhopWebhook], None] = lambda webhook: None
) -> WhopSample:
    """Ask Whop to send its sample of ``event`` to the configured webhook; ``on_webhook`` hears which webhook
    before Whop is asked (its answer can take a while). Raises as any Whop call (exit 2 or 3)."""
    if event not in WHOP_TEST_EVENTS:
        raise InvalidInput(
            f"Whop cannot send a sample of {event!r}", value=event, hint=f"use one of {', '.join(WHOP_TEST_EVENTS)}"
        )
    require_recovery_settings(settings)
    with WhopBackfillClient.from_settings(settings, job="send-test") as client:
        hook_id = find_webhook(client, settings)
        hook, _ = client.call("webhook", 1, lambda: client.sdk.webhooks.retrieve(hook_id))
        webhook = WhopWebhook(id=hook_id, url=str(hook.url))
        on_webhook(webhook)
        result, _ = client.call("test", 1, lambda: client.sdk.webhooks.test(hook_id, event=event))
    body = str(result.body) if result.body else None
    return WhopSample(
        event=event, webhook=webhook, status=result.status or None, body=body, landed=bool(result.success)
    )
