"""The backfill: both resources fetched concurrently into a tmp dir, then published as one snapshot.

Two entry points share one body: :func:`backfill` (``memberpulse backfill``) fetches the two resources as plain
calls on two threads, outside any Prefect flow run, so no temporary Prefect API server starts and none can
outlive a killed command (as ``memberpulse run`` does); :func:`backfill_flow` (deployments) fetches them as
tracked, retried Prefect tasks and adds a summary artifact.

Prefect loads this file by path for deployments (``prefect.yaml``), so every import here is absolute.
"""

# No ``from __future__ import annotations``: a runner (``flow.serve()``) cloudpickles the flow by value, and
# string annotations would then name types its globals no longer hold (Prefect's parameter model fails).

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait

from memberpulse.errors import MemberpulseError
from memberpulse.flows.backfill._fetch import fetch_members, fetch_memberships, fetch_resource
from memberpulse.flows.backfill._progress import ResourceResult, rate
from memberpulse.flows.deployment_runs import in_deployment, require_absolute_data_dir
from memberpulse.flows.recover import RecoveryResult, recover, recovery_skip_reason
from memberpulse.flows.statestore import shared_state
from memberpulse.flows.whop import (
    BackfillSnapshot,
    SnapshotWriter,
    backfill_skip_reason,
    clean_stale_tmp,
)
from memberpulse.settings import Settings, load_settings

log = logging.getLogger("memberpulse.backfill")


@dataclass(frozen=True)
class BackfillResult:
    status: Literal["written", "skipped"]
    message: str
    snapshot: BackfillSnapshot | None = None
    resources: dict[str, ResourceResult] = field(default_factory=dict)
    seconds: float = 0.0
    recovery: RecoveryResult | None = None  # the delivery-log step (None: skipped or failed)
    recovery_note: str | None = None  # why it was skipped, or what stopped it
    recovery_error: MemberpulseError | None = None

    @property
    def records(self) -> int:
        return sum(r.records for r in self.resources.values())


#: Fetches both resources into the tmp dir (concurrently) and returns their results, each finished.
FetchBoth = Callable[[Settings, Path, datetime], list[ResourceResult]]


def backfill(settings: Settings) -> BackfillResult:
    """One backfill as plain calls (``memberpulse backfill``): no Prefect flow run, no temporary API server.

    Raises :class:`WhopAuthError`/:class:`ConfigError` (fix a variable), :class:`WhopGaveUp` (Whop stayed
    down past the bounds, or paged without end). On any failure no snapshot is written and the previous one
    stays the latest.
    """
    with shared_state(settings, "backfill"):  # the storage URL set: lease, cache fetched, one tree commit
        return _backfill(settings, _fetch_on_threads, recover)


@flow(name="backfill", validate_parameters=False, persist_result=False)
def backfill_flow(settings: Settings | None = None) -> BackfillResult:
    """One backfill as a Prefect flow (deployments): the fetches are tracked, retried tasks, and the run gets a
    summary artifact. Raises as :func:`backfill`."""
    settings = settings or load_settings()
    with shared_state(settings, "backfill"):
        result = _backfill(settings, _fetch_as_tasks, recover_task)
    if result.snapshot is not None:
        _summary_artifact(result)
    return result


def _backfill(
    settings: Settings, fetch_both: FetchBoth, recover_step: Callable[[Settings], RecoveryResult]
) -> BackfillResult:
    log.info("data dir: %s", settings.data_dir.resolve())
    if in_deployment():
        require_absolute_data_dir(settings)
    reason = backfill_skip_reason(settings)
    if reason is not None:
        log.warning(reason)
        return BackfillResult(status="skipped", message=reason)
    if not settings.listed_companies:
        reason = "backfill skipped: no company to fetch (WHOP_COMPANY_ID and WHOP_COMPANY_IDS are not set)"
        log.warning(reason)
        return BackfillResult(status="skipped", message=reason)
    started = time.monotonic()
    clean_stale_tmp(settings.warehouse_dir)
    fetched_at = datetime.now(UTC)
    with SnapshotWriter(
        settings.warehouse_dir, fetched_at=fetched_at, company_id=settings.listed_companies[0]
    ) as writer:
        results = fetch_both(settings, writer.tmp_dir, fetched_at)
        snapshot = writer.commit(pages={r.resource: r.pages for r in results})
    recovery, note, error = _recover_step(settings, recover_step)
    return BackfillResult(
        status="written",
        message=f"snapshot {snapshot.path}",
        snapshot=snapshot,
        resources={r.resource: r for r in results},
        seconds=time.monotonic() - started,
        recovery=recovery,
        recovery_note=note,
        recovery_error=error,
    )


def _fetch_on_threads(settings: Settings, tmp_dir: Path, fetched_at: datetime) -> list[ResourceResult]:
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="backfill") as pool:
        futures = [pool.submit(fetch_resource, r, settings, tmp_dir, fetched_at) for r in ("memberships", "members")]
        # Wait for both before looking at either: a failed one must not delete the tmp dir under the other.
        wait_all(futures)
        return [f.result() for f in futures]


def _fetch_as_tasks(settings: Settings, tmp_dir: Path, fetched_at: datetime) -> list[ResourceResult]:
    futures = [
        fetch_memberships.submit(settings, tmp_dir, fetched_at),
        fetch_members.submit(settings, tmp_dir, fetched_at),
    ]
    wait(futures)  # both, before looking at either (as above)
    return [f.result() for f in futures]


@task(name="recover", cache_policy=NO_CACHE)
def recover_task(settings: Settings) -> RecoveryResult:
    return recover(settings)


def _recover_step(
    settings: Settings, recover_step: Callable[[Settings], RecoveryResult]
) -> tuple[RecoveryResult | None, str | None, MemberpulseError | None]:
    """The last step: events the landing missed, from Whop's delivery log. Its failure never undoes the
    snapshot already written; it is reported (and the CLI exits with its code)."""
    reason = recovery_skip_reason(settings)
    if reason is not None:
        log.info(reason)
        return None, reason, None
    try:
        result = recover_step(settings)
    except MemberpulseError as exc:
        log.warning("recovery from Whop's delivery log failed: %s", exc)
        return None, f"recovery failed: {exc}", exc
    log.info("recovery: %s", result.summary())
    return result, result.summary(), None


def _summary_artifact(result: BackfillResult) -> None:
    """A markdown summary on the flow run (deployments show it in the UI); never fails the run."""
    try:
        from prefect.artifacts import create_markdown_artifact

        rows = "\n".join(
            f"| {r.resource} | {r.pages} | {r.records} | {rate(r.records, r.seconds)} |"
            for r in result.resources.values()
        )
        create_markdown_artifact(
            key="backfill-summary",
            markdown=f"## Backfill\n\n{result.message}\n\n{result.recovery_note or ''}\n\n"
            f"| resource | pages | records | rate |\n|---|---|---|---|\n{rows}\n",
            description="memberpulse backfill",
        )
    except Exception as exc:  # an artifact is a nicety
        log.debug("could not create the backfill artifact: %s", exc)
