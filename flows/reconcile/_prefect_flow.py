"""The Prefect flow deployments run (``prefect.yaml``): :func:`reconcile` with each step a tracked task, the
run's summary and newly at-risk members as artifacts.

Deployments (``prefect.yaml``) name ``memberpulse.flows.reconcile.reconcile_flow``, resolved from the installed package.
"""

# No ``from __future__ import annotations``: a runner (``flow.serve()``) cloudpickles the flow by value, and
# string annotations would then name types its globals no longer hold (Prefect's parameter model fails).

import time
from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from memberpulse.flows.deployment_runs import in_deployment
from memberpulse.flows.reconcile._event_runs import landed_since_last_commit, supersede_queued_runs
from memberpulse.flows.reconcile._flow import OutputFailed, check_data_dir, reconcile
from memberpulse.flows.reconcile._report import AT_RISK_LISTED, RunReport
from memberpulse.flows.statestore import shared_state
from memberpulse.settings import Settings, load_settings


@flow(name="reconcile", log_prints=False)
def reconcile_flow(
    as_of: datetime | None = None,
    full_refresh: bool = False,
    settings: Settings | None = None,
    dry_run: bool = False,
    only_new: bool = False,
    catch_up_seconds: float = 0.0,
) -> dict[str, Any]:
    """Ingest new raw webhooks, fold, score, publish changed rows, write the DuckDB snapshot.

    A deployment passes no ``settings`` and reads the environment; tests and benches pass their own (Prefect
    records parameters, and ``SecretStr`` fields serialise masked, so no secret reaches its database). A failed
    publish fails the flow run (:class:`OutputFailed`) after every other output was written.

    Event-driven runs (prefect.yaml): ``only_new`` returns at once when nothing landed since the last commit;
    ``catch_up_seconds`` > 0 makes the run pass again while more webhooks landed during a pass (for at most
    that long), each pass first superseding the queued event-triggered runs it covers
    (:mod:`memberpulse.flows.reconcile._event_runs`).
    """
    settings = settings or load_settings()
    # The storage URL set: lease, cache, one tree commit. A failed publish is raised after the commit: the
    # state and snapshot it wrote are kept, as without the storage URL.
    with shared_state(settings, "run", write=not dry_run):
        outcome = _passes(settings, as_of, full_refresh, dry_run, only_new, catch_up_seconds)
    if isinstance(outcome, OutputFailed):
        raise outcome
    return outcome


def _passes(
    settings: Settings,
    as_of: datetime | None,
    full_refresh: bool,
    dry_run: bool,
    only_new: bool,
    catch_up_seconds: float,
) -> dict[str, Any] | OutputFailed:
    logger = get_run_logger()
    logger.info("data dir: %s", settings.data_dir.resolve())
    warning = check_data_dir(settings, deployment=in_deployment())
    if warning:
        logger.warning(warning)
    if only_new and not full_refresh and as_of is None and not landed_since_last_commit(settings):
        superseded = supersede_queued_runs(logger)
        logger.info("nothing landed since the last reconcile: skipped")
        return {"status": "skipped", "passes": 0, "superseded": superseded}
    follow = catch_up_seconds > 0 and as_of is None and not dry_run
    deadline = time.monotonic() + catch_up_seconds
    passes = superseded = 0
    found = [warning] if warning else []
    while True:
        superseded += supersede_queued_runs(logger) if follow else 0
        first = passes == 0
        refresh = full_refresh and first
        report = reconcile(settings, as_of=as_of, full_refresh=refresh, dry_run=dry_run, warnings=found, logger=logger)
        passes += 1
        _create_artifacts(report)
        if report.publish_failure is not None:
            return OutputFailed(report.publish_failure, report.as_dict())
        if not follow or report.records_read == 0 or time.monotonic() >= deadline:
            break
        if not landed_since_last_commit(settings):
            break
        logger.info("more webhooks landed during pass %d: passing again", passes)
    return {**report.as_dict(), "passes": passes, "superseded": superseded}


def _create_artifacts(report: RunReport) -> None:
    create_markdown_artifact(report.markdown(), key="reconcile-summary", description="Reconcile run")
    create_table_artifact(
        report.newly_at_risk or [{"membership_id": "(none)"}],
        key="members-newly-at-risk",
        description=f"Members whose status became at_risk in this run (at most {AT_RISK_LISTED} listed)",
    )
