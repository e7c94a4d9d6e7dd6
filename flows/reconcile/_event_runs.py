"""How event-triggered reconcile runs coalesce (the trigger itself lives in prefect.yaml).

The landing emits ``memberpulse.webhook.landed`` at most once a second; the ``reconcile`` deployment's trigger
asks for a run per event, and its concurrency limit (1, ENQUEUE) queues every request that comes while a run
is going. Left alone, a burst would leave one queued run per second of run time. Instead each pass of a run,
just before it reads the landing, cancels the queued event-triggered runs created before that moment (state
``Superseded``): whatever their events announced was stored before they were created, so this pass reads it.
Requests created after the read stay queued: at most one follow-up run does the rest. Scheduled (cron) and
manual runs are never superseded.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from prefect import runtime
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterCreatedBy,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.states import Cancelled

from memberpulse.flows.raw import reader as raw_reader
from memberpulse.flows.reconcile._store import ReconcileStore
from memberpulse.settings import Settings

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


def landed_since_last_commit(settings: Settings) -> bool:
    """Whether raw webhooks landed after the offsets the last reconcile committed (a stat per segment)."""
    offsets = ReconcileStore(settings.warehouse_dir).load_manifest().offsets
    return raw_reader.landed_since(settings.landing_dir, offsets)


def supersede_queued_runs(logger: Logger) -> int:
    """Cancel this deployment's queued event-triggered runs created until now; how many. Never raises: a run
    left queued only costs a short run later."""
    deployment_id, this_run = runtime.deployment.id, runtime.flow_run.id
    if not deployment_id or not this_run:
        return 0  # not a deployment run (CLI, tests): nothing is queued behind it
    cutoff = datetime.now(UTC)
    try:
        with get_client(sync_client=True) as client:
            queued = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                    created_by=FlowRunFilterCreatedBy(type_=["AUTOMATION"]),
                )
            )
            superseded = 0
            for run in queued:
                if str(run.id) == str(this_run) or run.created is None or run.created > cutoff:
                    continue
                state: Any = Cancelled(name="Superseded", message=f"covered by reconcile run {this_run}")
                result = client.set_flow_run_state(run.id, state)
                superseded += result.status == SetStateStatus.ACCEPT
    except Exception as exc:
        logger.warning("could not supersede queued reconcile runs (they will run, briefly): %r", exc)
        return 0
    if superseded:
        logger.info("superseded %d queued event-triggered run(s): this pass reads what they were for", superseded)
    return superseded
