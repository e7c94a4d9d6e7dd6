"""The Prefect flow deployments run (``prefect.yaml``): :func:`reconcile` with each step a tracked task, the
run's summary and newly at-risk members as artifacts.

Prefect loads this file by path for deployments, so every import here is absolute.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from memberpulse.flows.reconcile._flow import reconcile
from memberpulse.flows.reconcile._report import AT_RISK_LISTED
from memberpulse.settings import Settings


@flow(name="reconcile", log_prints=False)
def reconcile_flow(
    as_of: datetime | None = None, full_refresh: bool = False, settings: Settings | None = None
) -> dict[str, Any]:
    """Ingest new raw webhooks, fold, score, publish changed rows, write the DuckDB snapshot.

    A deployment passes no ``settings`` and reads the environment; tests and benches pass their own (Prefect records
    parameters, and ``SecretStr`` fields serialise masked, so no secret reaches its database).
    """
    settings = settings or Settings()
    report = reconcile(settings, as_of=as_of, full_refresh=full_refresh, logger=get_run_logger())
    create_markdown_artifact(report.markdown(), key="reconcile-summary", description="Reconcile run")
    create_table_artifact(
        report.newly_at_risk or [{"membership_id": "(none)"}],
        key="members-newly-at-risk",
        description=f"Members whose status became at_risk in this run (at most {AT_RISK_LISTED} listed)",
    )
    return report.as_dict()
