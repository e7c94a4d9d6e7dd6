"""The backfill flow: every page of each company's memberships and members from Whop's REST API, written as one
immutable snapshot per company (``warehouse/backfill/<company>/<fetched_at>/``) that the reconcile flow folds in.

``memberpulse backfill`` calls :func:`backfill` (plain calls on a bounded pool of threads, no Prefect server
that a kill could leave behind), showing the progress it routes to the fetches with :func:`reporting`;
deployments run :func:`backfill_flow` (a Prefect task per company). Without a Whop API key the backfill is
skipped and says why. The companies, one request budget per API key, the isolation of one company's failure
from the others and the round that retries only the failed ones: ``_flow``, ``_companies``.

Retries happen at two levels, each for what it can fix: the Whop client retries one page (429 waits, 5xx and
timeouts with backoff, see ``flows/whop``) and gives up with :class:`WhopGaveUp` past its bounds; the Prefect
task of a company (deployments only) retries only on a :class:`TransientError` that escaped (a disk hiccup
writing Parquet), restarting that company from page 1 into a fresh folder.
"""

from __future__ import annotations

from memberpulse.flows.backfill._companies import load_round
from memberpulse.flows.backfill._fetch import CompanyBackfill, backfill_company, fetch_company, fetch_resource
from memberpulse.flows.backfill._flow import BackfillResult, CompaniesFailed, backfill, backfill_flow
from memberpulse.flows.backfill._progress import BackfillProgress, ResourceResult, rate, reporting

__all__ = [
    "BackfillProgress",
    "BackfillResult",
    "CompaniesFailed",
    "CompanyBackfill",
    "ResourceResult",
    "backfill",
    "backfill_company",
    "backfill_flow",
    "fetch_company",
    "fetch_resource",
    "load_round",
    "rate",
    "reporting",
]
