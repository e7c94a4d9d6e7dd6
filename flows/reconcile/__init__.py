"""The reconcile flow: raw webhooks + Whop's API view → scored members → Supabase and a DuckDB snapshot.

One run takes the steps of :data:`STEPS` (``_step_list``), in that order: the one list of them, which the
flow, the Prefect task names and the docs refer to. Each step returns what it produced (``_steps``); the flow
(``_flow``) assembles the run's :class:`RunReport` from those values (``_report``). ``memberpulse run`` calls
:func:`one_off_run` (the steps as plain calls); deployments run :func:`reconcile_flow` (``_prefect_flow``),
where the same steps are Prefect tasks.

Each step is safe to crash in. Ingest commits the member state and the raw offsets at once
(``memberpulse.flows.reconcile._store``): a crash before that commit re-reads the same bytes next time; after
it, the next run finds the rows still unpublished and publishes them. The target's transaction is the
publish's commit, and the published-state file advances only after it; a failed publish is noted, not raised,
so the snapshot still gets this run's rows, and the run fails afterwards. The run is recorded only once the
snapshot is swapped in, so no record says "completed" while an output is missing.

A run whose as-of is earlier than the last commit's ("backdated") and a dry run commit nothing (ingest in
memory), publish and record nothing; a backdated run writes ``snapshots/as-of/<as_of>.duckdb`` instead of
swapping ``latest.duckdb``; a dry run writes no file at all (each step's ``modes``). Runs never overlap: a
file lock (``_lock``), on top of the deployment's concurrency limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memberpulse.flows.reconcile._companies import COMPANY_HEADINGS, CompanyLine
from memberpulse.flows.reconcile._flow import OutputFailed, check_data_dir, reconcile
from memberpulse.flows.reconcile._ingest import Ingested, ingest
from memberpulse.flows.reconcile._lock import run_lock
from memberpulse.flows.reconcile._one_off import one_off_run
from memberpulse.flows.reconcile._report import AT_RISK_LISTED, RunReport
from memberpulse.flows.reconcile._step_list import STEPS, RunMode, Step, steps_for
from memberpulse.flows.reconcile._store import companies_seen

if TYPE_CHECKING:
    from memberpulse.flows.reconcile._prefect_flow import reconcile_flow


def __getattr__(name: str) -> Any:
    """``reconcile_flow`` imports Prefect on first use only, so ``memberpulse run`` never pays for it."""
    if name == "reconcile_flow":
        from memberpulse.flows.reconcile._prefect_flow import reconcile_flow

        return reconcile_flow
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AT_RISK_LISTED",
    "COMPANY_HEADINGS",
    "STEPS",
    "CompanyLine",
    "Ingested",
    "OutputFailed",
    "RunMode",
    "RunReport",
    "Step",
    "check_data_dir",
    "companies_seen",
    "ingest",
    "one_off_run",
    "reconcile",
    "reconcile_flow",
    "run_lock",
    "steps_for",
]
