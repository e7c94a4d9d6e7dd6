"""Publish scored members to Supabase: only changed rows, all or nothing, through Postgres or PostgREST.

The reconcile flow calls, with its Settings::

    outcome = publish_members(settings, scored, run_at=run_at)   # PublishOutcome(result, as_published, ...)
    runs = record_run(settings, report.pipeline_run(), rejects=rejects)   # pipeline_runs frame

or, holding the publisher itself::

    publisher = get_publisher(settings)          # None when no Supabase target is configured
    with publisher:
        publisher.publish_members(scored, run_at=run_at)   # PublishResult(inserted, updated, unchanged)
        publisher.record_failures(failures)                # webhook_failures
        publisher.record_run(PipelineRun(...))             # pipeline_runs

``SUPABASE_DB_URL`` selects the Postgres path (COPY + one upsert, one transaction); otherwise
``SUPABASE_URL`` + ``SUPABASE_SERVICE_ROLE_KEY`` select the PostgREST path (supabase-py, batched upserts).
Each ``publish_members`` first checks, in one query, that the target still holds the published state, and sends
it whole again when it does not (or when the member state was rebuilt); each call ends by its deadline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memberpulse.flows.publish._changes import (
    ChangeHints,
    PublishedState,
    PublishPlan,
    as_published,
    diff_published,
    newly_at_risk,
    plan_publish,
)
from memberpulse.flows.publish._failure_company import failure_company
from memberpulse.flows.publish._migrations import Migrated, apply_migrations, migrate
from memberpulse.flows.publish._postgres import PostgresPublisher
from memberpulse.flows.publish._publish_step import (
    PublishOutcome,
    failures_from_rejects,
    failures_with,
    get_publisher,
    preview_publish,
    publish_members,
    publish_state,
    record_run,
    runs_with,
    target_name,
)
from memberpulse.flows.publish._publisher import (
    DEFAULT_PUBLISH_CONFIG,
    REFUSED_LABEL,
    REJECTS_LABEL,
    PipelineRun,
    PublishConfig,
    Publisher,
    PublishResult,
    RunStatus,
)

if TYPE_CHECKING:
    from memberpulse.flows.publish._postgrest import PostgrestPublisher


def __getattr__(name: str) -> Any:
    """supabase-py takes most of a second to import: only the PostgREST target pays for it."""
    if name == "PostgrestPublisher":
        from memberpulse.flows.publish._postgrest import PostgrestPublisher

        return PostgrestPublisher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_PUBLISH_CONFIG",
    "REFUSED_LABEL",
    "REJECTS_LABEL",
    "ChangeHints",
    "Migrated",
    "PipelineRun",
    "PostgresPublisher",
    "PostgrestPublisher",
    "PublishConfig",
    "PublishOutcome",
    "PublishPlan",
    "PublishResult",
    "PublishedState",
    "Publisher",
    "RunStatus",
    "apply_migrations",
    "as_published",
    "diff_published",
    "failure_company",
    "failures_from_rejects",
    "failures_with",
    "get_publisher",
    "migrate",
    "newly_at_risk",
    "plan_publish",
    "preview_publish",
    "publish_members",
    "publish_state",
    "record_run",
    "runs_with",
    "target_name",
]
