"""The recovery settings checked before any request, and the one webhook ``send-test --via-whop`` asks Whop to
test: ``WHOP_WEBHOOK_ID`` (the first, when several), or the one whose URL is the landing's public URL. Which
webhooks a recovery reads: ``_hooks``."""

from __future__ import annotations

from functools import partial
from typing import Any

from memberpulse.errors import ConfigError
from memberpulse.flows.whop import WhopBackfillClient, backfill_skip_reason
from memberpulse.settings import Settings

_WHERE = "Whop dashboard → Developer → Webhooks"


def recovery_skip_reason(settings: Settings) -> str | None:
    """Why recovery cannot run with these settings (the nightly backfill skips its recovery step and says so)."""
    reason = backfill_skip_reason(settings)
    if reason is not None:
        return reason.replace("backfill skipped", "recovery skipped")
    if not (settings.whop_webhook_id or "").strip() and not (settings.public_webhook_url or "").strip():
        return "recovery skipped: neither WHOP_WEBHOOK_ID nor MEMBERPULSE_PUBLIC_WEBHOOK_URL is set"
    return None


def require_recovery_settings(settings: Settings) -> None:
    """Fail before any request, naming the one variable to fix."""
    reason = backfill_skip_reason(settings)
    if reason is not None:
        raise ConfigError(reason.replace("backfill skipped", "cannot recover"), variable="WHOP_API_KEY")
    hook_ids = [h.strip() for h in (settings.whop_webhook_id or "").split(",") if h.strip()]
    for hook_id in hook_ids:
        if not hook_id.startswith("hook_"):
            raise ConfigError(
                f"WHOP_WEBHOOK_ID {hook_id!r} is not a webhook id (they start with hook_)",
                variable="WHOP_WEBHOOK_ID",
                hint=f"copy the id from {_WHERE}",
            )
    if not hook_ids and not (settings.public_webhook_url or "").strip():
        raise ConfigError(
            "WHOP_WEBHOOK_ID is not set (nor MEMBERPULSE_PUBLIC_WEBHOOK_URL to find it by)",
            variable="WHOP_WEBHOOK_ID",
            hint=f"set WHOP_WEBHOOK_ID to the hook_... id in {_WHERE}",
        )


def find_webhook(client: WhopBackfillClient, settings: Settings) -> str:
    """The webhook id, checked against Whop: a wrong one is a ConfigError naming the variable."""
    hook_id = next((h.strip() for h in (settings.whop_webhook_id or "").split(",") if h.strip()), "")
    if hook_id:
        missing = ConfigError(
            f"WHOP_WEBHOOK_ID {hook_id!r}: Whop has no such webhook for this API key",
            variable="WHOP_WEBHOOK_ID",
            hint=f"copy the id from {_WHERE}, for the company of WHOP_API_KEY",
        )
        client.call("webhook", 1, lambda: client.sdk.webhooks.retrieve(hook_id), not_found=missing)
        return hook_id
    url = _normal(settings.public_webhook_url or "")
    for hook in _all_webhooks(client):
        if _normal(hook.url) == url:
            return str(hook.id)
    raise ConfigError(
        f"MEMBERPULSE_PUBLIC_WEBHOOK_URL {settings.public_webhook_url!r}: no webhook of company "
        f"{client.company_id} posts to it",
        variable="MEMBERPULSE_PUBLIC_WEBHOOK_URL",
        hint=f"set it to the URL configured in {_WHERE}, or set WHOP_WEBHOOK_ID",
    )


def _all_webhooks(client: WhopBackfillClient) -> list[Any]:
    hooks: list[Any] = []
    request = partial(client.sdk.webhooks.list, account_id=client.company_id, first=100)
    for _, pager, _ in client.cursor_pages("webhooks", lambda after: request(after=after)):
        hooks += list(pager.items or [])
    return hooks


def _normal(url: str) -> str:
    return url.strip().rstrip("/").lower()
