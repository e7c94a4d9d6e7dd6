"""One company's backfill: both resources (memberships, members), every page, streamed into Parquet files side by
side on two threads, then published as that company's snapshot; and its Prefect task."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from prefect import task

from memberpulse.flows.backfill._progress import ResourceResult, current
from memberpulse.flows.retry_policy import TRANSIENT_RETRY
from memberpulse.flows.whop import (
    MEMBERS_SCHEMA,
    MEMBERSHIPS_SCHEMA,
    BackfillSnapshot,
    ParquetSink,
    PrefectRateLimit,
    RateBudget,
    RequestLimiter,
    Resource,
    RetryEvent,
    SnapshotWriter,
    WhopBackfillClient,
    credential_name,
    local_limiter,
    members_batch,
    memberships_batch,
)
from memberpulse.settings import Settings

log = logging.getLogger("memberpulse.backfill")

#: Where a company's requests take their turns: this process's bucket (plain calls), or the key's Prefect
#: global concurrency limit (flow runs: shared by every worker).
LimiterKind = Literal["local", "prefect"]


@dataclass(frozen=True)
class CompanyBackfill:
    """One company's snapshot, written."""

    company_id: str
    snapshot: BackfillSnapshot
    resources: dict[str, ResourceResult] = field(default_factory=dict)
    seconds: float = 0.0


def limiter_for(settings: Settings, company_id: str, kind: LimiterKind) -> RequestLimiter:
    """The request budget of the key that reads ``company_id`` (the Prefect one exists: the flow made it)."""
    key = settings.whop_key_for(company_id)
    assert key is not None  # companies without a key are failures before any fetch
    budget = RateBudget.from_settings(settings)
    if kind == "prefect":
        return PrefectRateLimit(credential_name(key.get_secret_value().strip()), budget)
    return local_limiter(key.get_secret_value().strip(), budget)


def fetch_company(settings: Settings, company_id: str, limiter: LimiterKind) -> CompanyBackfill:
    """Both resources of ``company_id`` into a tmp dir, then its snapshot, atomically. Raises what stopped it
    (nothing of it is written then; its previous snapshot stays its latest)."""
    started = time.monotonic()
    fetched_at = datetime.now(UTC)
    turns = limiter_for(settings, company_id, limiter)
    with SnapshotWriter(settings.warehouse_dir, fetched_at=fetched_at, company_id=company_id) as writer:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"backfill-{company_id}") as pool:
            futures = [
                pool.submit(fetch_resource, r, settings, writer.tmp_dir, fetched_at, company_id, turns)
                for r in ("memberships", "members")
            ]
            # Wait for both before looking at either: a failed one must not delete the tmp dir under the other.
            wait_all(futures)
            results = [f.result() for f in futures]
        snapshot = writer.commit(pages={r.resource: r.pages for r in results})
    return CompanyBackfill(company_id, snapshot, {r.resource: r for r in results}, time.monotonic() - started)


def fetch_resource(
    resource: Resource,
    settings: Settings,
    tmp_dir: Path,
    fetched_at: datetime,
    company_id: str | None = None,
    limiter: RequestLimiter | None = None,
) -> ResourceResult:
    """Stream every page of ``resource`` of ``company_id`` (default: the first the settings list) into
    ``tmp_dir/<resource>.parquet`` (a retry starts it over)."""
    progress = current()

    def on_retry(event: RetryEvent) -> None:
        if progress is not None:
            progress.retry(event)

    started = time.monotonic()
    schema = MEMBERSHIPS_SCHEMA if resource == "memberships" else MEMBERS_SCHEMA
    sink = ParquetSink(tmp_dir / f"{resource}.parquet", schema)
    pages = 0
    try:
        with WhopBackfillClient.from_settings(
            settings, company_id=company_id, on_retry=on_retry, limiter=limiter
        ) as client:
            for page in client.pages(resource):
                if resource == "memberships":
                    batch = memberships_batch(page.items, company_id=client.company_id, fetched_at=fetched_at)
                else:
                    batch = members_batch(page.items, fetched_at=fetched_at)
                sink.write(batch)
                pages = page.number
                if progress is not None:
                    progress.page(client.company_id, resource, pages, sink.rows, time.monotonic() - started)
        records = sink.close()
    except BaseException:
        sink.abort()
        raise
    result = ResourceResult(resource, pages, records, time.monotonic() - started, client.company_id)
    log.info(
        "backfill %s %s: %d pages, %d records in %.1f s", client.company_id, resource, pages, records, result.seconds
    )
    if progress is not None:
        progress.finished(result)
    return result


@task(
    name="backfill-company",
    task_run_name="backfill-{company_id}",
    persist_result=False,
    **TRANSIENT_RETRY,
)
def backfill_company(settings: Settings, company_id: str) -> CompanyBackfill:
    """One company's fetch as a tracked Prefect task (retried only on a transient error that escaped the
    client's own bounds, a disk hiccup say; the client's give-ups are final). Its requests take turns from the
    key's Prefect global concurrency limit."""
    return fetch_company(settings, company_id, "prefect")
