"""Which webhooks' delivery logs a recovery reads, which key reads each, and whose events each may carry.

- ``WHOP_WEBHOOK_ID`` (one ``hook_…`` id, or several, comma-separated): those webhooks, read with
  ``WHOP_API_KEY`` (else the first listed company's own key). This is how an **app webhook** is named: it belongs to
  the app (its ``resource_id`` is the app's ``app_…``), not to any company, so no company's list of webhooks holds
  it: copy its id from the Developer Dashboard → your app → Webhooks.
- Else ``MEMBERPULSE_PUBLIC_WEBHOOK_URL``: every company the deployment serves is asked for its webhooks (with its
  key; ``include_app_webhooks``, so the app owner's company lists its apps' webhooks too), side by side, and each
  webhook posting to that URL is read once, with the key of the company it was found for. A company whose list
  cannot be read (an uninstall's 403) is that company's failure; the others' webhooks are read.

A webhook's events are kept by owner: a company's webhook (``biz_…``, without child-resource events) carries only
that company's; an app's webhook (``app_…``), or a company's with child-resource events, carries every company
that installed the app, so each is kept unless left out (``-biz_…``); a webhook whose owner is not known keeps
the companies the deployment serves. Events that name no company are kept, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from memberpulse.errors import ConfigError
from memberpulse.flows.companies import CompanyFailure
from memberpulse.flows.whop import WhopBackfillClient
from memberpulse.settings import Settings

_WHERE = "Whop dashboard → Developer → Webhooks (an app's: Developer Dashboard → your app → Webhooks)"

#: A Whop client for the key of a company ("": WHOP_API_KEY's), used as a context manager.
ClientFor = Callable[[str], WhopBackfillClient]


@dataclass(frozen=True)
class Hook:
    """One webhook whose delivery log is read: ``reader`` names the key (a company's; "" for WHOP_API_KEY)."""

    id: str
    reader: str
    owner: str | None  # its resource_id: biz_… (a company's), app_… (an app's), None (not known)
    child_events: bool = False

    def keeps(self, company: str | None, serving: Collection[str], left_out: Collection[str]) -> bool:
        """Whether an event of ``company`` (from its envelope) belongs in this deployment."""
        if company is None:
            return True
        if company in left_out:
            return False
        if self.owner is not None and self.owner.startswith("biz_") and not self.child_events:
            return company == self.owner
        if self.owner is not None:
            return True
        return company in serving


def configured_hook_ids(settings: Settings) -> list[str]:
    return [h.strip() for h in (settings.whop_webhook_id or "").split(",") if h.strip()]


def find_hooks(
    settings: Settings, companies: list[str], client_for: ClientFor
) -> tuple[list[Hook], list[CompanyFailure]]:
    """The webhooks to read (see the module docstring) and the companies or webhooks that could not be looked up
    (each isolated). ConfigError when the public URL matches no webhook of any company that answered."""
    ids = configured_hook_ids(settings)
    if ids:
        reader = "" if settings.whop_key_for("") is not None else next(iter(settings.listed_companies), "")
        outcomes = _side_by_side(settings, ids, partial(_retrieve, client_for, reader))
    else:
        outcomes = _side_by_side(settings, companies, partial(_by_url, client_for, settings.public_webhook_url or ""))
    hooks: dict[str, Hook] = {}
    failures: list[CompanyFailure] = []
    for unit, outcome in outcomes:
        if isinstance(outcome, BaseException):
            failures.append(CompanyFailure.of(unit, outcome))
            continue
        for hook in outcome:
            hooks.setdefault(hook.id, hook)
    if not ids and not hooks and not failures:
        shown = (", ".join(companies[:3]) + (" …" if len(companies) > 3 else "")) or "(none)"
        raise ConfigError(
            f"MEMBERPULSE_PUBLIC_WEBHOOK_URL {settings.public_webhook_url!r}: no webhook of company {shown} "
            "posts to it",
            variable="MEMBERPULSE_PUBLIC_WEBHOOK_URL",
            hint=f"set it to the URL configured in {_WHERE}, or set WHOP_WEBHOOK_ID",
        )
    return list(hooks.values()), failures


def _side_by_side(
    settings: Settings, units: list[str], look_up: Callable[[str], list[Hook]]
) -> Iterator[tuple[str, list[Hook] | BaseException]]:
    """``look_up`` of each unit on a bounded pool; an error is that unit's outcome, not the others'."""

    def isolated(unit: str) -> tuple[str, list[Hook] | BaseException]:
        try:
            return unit, look_up(unit)
        except Exception as exc:  # one company's 403 (an uninstall) is that company's alone
            return unit, exc

    with ThreadPoolExecutor(max_workers=max(1, min(settings.backfill_concurrency, len(units)))) as pool:
        yield from pool.map(isolated, units)


def _retrieve(client_for: ClientFor, reader: str, hook_id: str) -> list[Hook]:
    if not hook_id.startswith("hook_"):
        raise ConfigError(
            f"WHOP_WEBHOOK_ID {hook_id!r} is not a webhook id (they start with hook_)",
            variable="WHOP_WEBHOOK_ID",
            hint=f"copy the id from {_WHERE}",
        )
    missing = ConfigError(
        f"WHOP_WEBHOOK_ID {hook_id!r}: Whop has no such webhook for this API key",
        variable="WHOP_WEBHOOK_ID",
        hint=f"copy the id from {_WHERE}, for the company or app of WHOP_API_KEY",
    )
    with client_for(reader) as client:
        hook, _ = client.call("webhook", 1, lambda: client.sdk.webhooks.retrieve(hook_id), not_found=missing)
    return [_hook(hook, reader)]


def _by_url(client_for: ClientFor, url: str, company: str) -> list[Hook]:
    wanted = _normal(url)
    with client_for(company) as client:
        request = partial(client.sdk.webhooks.list, account_id=company, include_app_webhooks=True, first=100)
        found = []
        for _, pager, _ in client.cursor_pages("webhooks", lambda after: request(after=after)):
            found += [_hook(h, company) for h in pager.items or [] if _normal(h.url) == wanted]
    return found


def _hook(hook: Any, reader: str) -> Hook:
    owner = getattr(hook, "resource_id", None)
    child_events = bool(getattr(hook, "child_resource_events", False))
    return Hook(str(hook.id), reader, str(owner) if owner else None, child_events)


def _normal(url: str) -> str:
    return url.strip().rstrip("/").lower()
