"""The backfill flow: both resources fetched concurrently into a tmp dir, then published as one snapshot.

Prefect loads this file by path for deployments (``prefect.yaml``), so every import here is absolute.
"""

# No ``from __future__ import annotations``: a runner (``flow.serve()``) cloudpickles the flow by value, and
# string annotations would then name types its globals no longer hold (Prefect's parameter model fails).

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait

from memberpulse.errors import MemberpulseError
from memberpulse.flows.backfill._fetch import fetch_members, fetch_memberships
from memberpulse.flows.backfill._progress import ResourceResult, rate
from memberpulse.flows.deployment_runs import in_deployment, require_absolute_data_dir
from memberpulse.flows.recover import RecoveryResult, recover, recovery_skip_reason
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


@flow(name="backfill", validate_parameters=False, persist_result=False)
def backfill_flow(settings: Settings | None = None) -> BackfillResult:
    """One backfill: both resources fetched concurrently into a tmp dir, then published as one snapshot.

    Raises :class:`WhopAuthError`/:class:`ConfigError` (fix a variable), :class:`WhopGaveUp` (Whop stayed
    down past the bounds). On any failure no snapshot is written and the previous one stays the latest.
    """
    settings = settings or load_settings()
    log.info("data dir: %s", settings.data_dir.resolve())
    if in_deployment():
        require_absolute_data_dir(settings)
    reason = backfill_skip_reason(settings)
    if reason is not None:
        log.warning(reason)
        return BackfillResult(status="skipped", message=reason)
    assert settings.whop_company_id is not None
    started = time.monotonic()
    clean_stale_tmp(settings.warehouse_dir)
    fetched_at = datetime.now(UTC)
    with SnapshotWriter(
        settings.warehouse_dir, fetched_at=fetched_at, company_id=settings.whop_company_id.strip()
    ) as writer:
        futures = [
            fetch_memberships.submit(settings, writer.tmp_dir, fetched_at),
            fetch_members.submit(settings, writer.tmp_dir, fetched_at),
        ]
        # Wait for both before looking at either: a failed one must not delete the tmp dir under the other.
        wait(futures)
        results = [f.result() for f in futures]
        snapshot = writer.commit(pages={r.resource: r.pages for r in results})
    recovery, note, error = _recover_step(settings)
    result = BackfillResult(
        status="written",
        message=f"snapshot {snapshot.path}",
        snapshot=snapshot,
        resources={r.resource: r for r in results},
        seconds=time.monotonic() - started,
        recovery=recovery,
        recovery_note=note,
        recovery_error=error,
    )
    _summary_artifact(result)
    return result


@task(name="recover", cache_policy=NO_CACHE)
def recover_task(settings: Settings) -> RecoveryResult:
    return recover(settings)


def _recover_step(settings: Settings) -> tuple[RecoveryResult | None, str | None, MemberpulseError | None]:
    """The last step: events the landing missed, from Whop's delivery log. Its failure never undoes the
    snapshot already written; it is reported (and the CLI exits with its code)."""
    reason = recovery_skip_reason(settings)
    if reason is not None:
        log.info(reason)
        return None, reason, None
    try:
        result = recover_task(settings)
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
