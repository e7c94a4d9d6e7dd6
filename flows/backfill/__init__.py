"""The backfill flow: every page of the company's memberships and members from Whop's REST API, written as
one immutable snapshot (``warehouse/backfill/<fetched_at>/``) that the reconcile flow folds in.

``memberpulse backfill`` calls :func:`backfill` (plain calls on two threads, no Prefect server that a kill
could leave behind), showing the progress it routes to the fetches with :func:`reporting`; deployments run
:func:`backfill_flow`. Without ``WHOP_API_KEY`` and ``WHOP_COMPANY_ID`` the backfill is skipped and says why.

Retries happen at two levels, each for what it can fix: the Whop client retries one page (429 waits, 5xx and
timeouts with backoff, see ``flows/whop``) and gives up with :class:`WhopGaveUp` past its bounds; the Prefect
tasks (deployments only) retry only on a :class:`TransientError` that escaped (a disk hiccup writing Parquet),
restarting their resource from page 1 into a fresh file.
"""

from __future__ import annotations

from memberpulse.flows.backfill._fetch import fetch_members, fetch_memberships, fetch_resource
from memberpulse.flows.backfill._flow import BackfillResult, backfill, backfill_flow
from memberpulse.flows.backfill._progress import BackfillProgress, ResourceResult, rate, reporting

__all__ = [
    "BackfillProgress",
    "BackfillResult",
    "ResourceResult",
    "backfill",
    "backfill_flow",
    "fetch_members",
    "fetch_memberships",
    "fetch_resource",
    "rate",
    "reporting",
]
