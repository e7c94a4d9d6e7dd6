"""The companies one deployment serves, and how a company's failure in a fan-out is told.

The companies: those the settings list (``Settings.listed_companies``: ``WHOP_COMPANY_ID``, ``WHOP_COMPANY_IDS``,
``WHOP_COMPANY_API_KEYS``), then every company of the committed member state (webhooks that landed, signature-
verified or recovered, and earlier backfills), less the ones left out (``-biz_…``). The backfill fetches them;
recovery finds their webhooks. One company's failure in either (:class:`CompanyFailure`) never stops another's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from memberpulse.errors import FatalError, TransientError
from memberpulse.settings import COMPANY_ID, Settings

log = logging.getLogger("memberpulse.companies")

#: What a company's failure asks of a person: fix a setting or the company (``configuration``: a FatalError,
#: such as 401/403/404), nothing but a later try (``transient``), or a look at something unexpected (``failed``).
FailureKind = Literal["configuration", "transient", "failed"]
#: Several failures, one kind: the first of these that occurs.
PRESSING: tuple[FailureKind, ...] = ("configuration", "failed", "transient")


@dataclass(frozen=True)
class CompanyFailure:
    """One company (or one of its webhooks) a fan-out could not finish, why (one line, no secret), of what kind,
    and the error itself (a run that finished nothing raises it)."""

    company_id: str
    reason: str
    kind: FailureKind
    error: BaseException | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, company_id: str, error: BaseException) -> CompanyFailure:
        if isinstance(error, FatalError):
            return cls(company_id, str(error), "configuration", error)
        if isinstance(error, TransientError):
            return cls(company_id, str(error), "transient", error)
        return cls(company_id, f"{type(error).__name__}: {error}", "failed", error)


def most_pressing(kinds: Iterable[FailureKind]) -> FailureKind | None:
    """The kind of several failures: a setting to fix first, then a failure, then try later (None: none)."""
    found = set(kinds)
    return next((kind for kind in PRESSING if kind in found), None)


def serving_companies(settings: Settings) -> list[str]:
    """Listed first, then seen in the member state; each once, none left out, only well-formed ids (a company
    id names a folder)."""
    from memberpulse.flows.reconcile import companies_seen  # here: the reconcile imports recovery, which imports this

    left_out = settings.excluded_companies
    seen = []
    for company in companies_seen(settings.warehouse_dir):
        if COMPANY_ID.fullmatch(company) is None:
            log.warning("company id %r from a landed webhook is not a Whop company id: left out", company[:80])
        elif company not in left_out:
            seen.append(company)
    return list(dict.fromkeys([*settings.listed_companies, *seen]))
