"""One resource (memberships or members), every page, streamed into a Parquet file; and its Prefect tasks."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

from prefect import task

from memberpulse.flows.backfill._progress import ResourceResult, current
from memberpulse.flows.retry_policy import TRANSIENT_RETRY
from memberpulse.flows.whop import (
    MEMBERS_SCHEMA,
    MEMBERSHIPS_SCHEMA,
    ParquetSink,
    Resource,
    RetryEvent,
    WhopBackfillClient,
    members_batch,
    memberships_batch,
)
from memberpulse.settings import Settings

log = logging.getLogger("memberpulse.backfill")


def fetch_resource(resource: Resource, settings: Settings, tmp_dir: Path, fetched_at: datetime) -> ResourceResult:
    """Stream every page of ``resource`` into ``tmp_dir/<resource>.parquet`` (a retry starts it over)."""
    progress = current()

    def on_retry(event: RetryEvent) -> None:
        if progress is not None:
            progress.retry(event)

    started = time.monotonic()
    schema = MEMBERSHIPS_SCHEMA if resource == "memberships" else MEMBERS_SCHEMA
    sink = ParquetSink(tmp_dir / f"{resource}.parquet", schema)
    pages = 0
    try:
        with WhopBackfillClient.from_settings(settings, on_retry=on_retry) as client:
            for page in client.pages(resource):
                if resource == "memberships":
                    batch = memberships_batch(page.items, company_id=client.company_id, fetched_at=fetched_at)
                else:
                    batch = members_batch(page.items, fetched_at=fetched_at)
                sink.write(batch)
                pages = page.number
                if progress is not None:
                    progress.page(resource, pages, sink.rows, time.monotonic() - started)
        records = sink.close()
    except BaseException:
        sink.abort()
        raise
    result = ResourceResult(resource, pages, records, time.monotonic() - started)
    log.info("backfill %s: %d pages, %d records in %.1f s", resource, pages, records, result.seconds)
    if progress is not None:
        progress.finished(result)
    return result


@task(name="backfill-memberships", persist_result=False, **TRANSIENT_RETRY)
def fetch_memberships(settings: Settings, tmp_dir: Path, fetched_at: datetime) -> ResourceResult:
    return fetch_resource("memberships", settings, tmp_dir, fetched_at)


@task(name="backfill-members", persist_result=False, **TRANSIENT_RETRY)
def fetch_members(settings: Settings, tmp_dir: Path, fetched_at: datetime) -> ResourceResult:
    return fetch_resource("members", settings, tmp_dir, fetched_at)
