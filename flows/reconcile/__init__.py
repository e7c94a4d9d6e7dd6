"""The reconcile flow: raw webhooks + Whop's API view → scored members → Supabase and a DuckDB snapshot.

One run, in order, each step safe to crash in:

1. ingest   read raw lines appended since the last commit, parse, dedupe, fold them (and any backfill snapshot
            not folded yet) into member state; commit state + offsets at once (``_ingest``,
            ``memberpulse.flows.reconcile._store``).
2. score    every member as of T (now, or ``--as-of``) (``_score``).
3. publish  only rows that changed since the last successful publish; the target's transaction is the
            commit, and the published-state file advances only after it (``_steps.publish``). A failed
            publish is noted, not raised: the snapshot still gets this run's rows; the flow fails afterwards.
4. snapshot a new DuckDB file swapped in as ``snapshots/latest.duckdb`` (``_steps.snapshot``).
5. record   the run in ``pipeline_runs`` (the run log and Supabase) and as a Prefect artifact (``_report``):
            only now, so no record says "completed" while an output is missing.

A run whose as-of is earlier than the last commit's ("backdated") and a dry run commit nothing (ingest in
memory), publish and record nothing; a backdated run writes ``snapshots/as-of/<as_of>.duckdb`` instead of
swapping ``latest.duckdb``; a dry run writes no file at all.

A crash before (1)'s commit re-reads the same bytes next time; after it, the next run finds the rows still
unpublished and publishes them. Runs never overlap: a file lock (``_lock``), on top of the deployment's
concurrency limit. The steps and their order live in ``_flow``; the Prefect flow deployments run, in
``_prefect_flow``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memberpulse.flows.reconcile._cli import run_once
from memberpulse.flows.reconcile._flow import OutputFailed, reconcile
from memberpulse.flows.reconcile._ingest import Ingested, ingest
from memberpulse.flows.reconcile._lock import run_lock
from memberpulse.flows.reconcile._report import AT_RISK_LISTED, RunReport

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
    "Ingested",
    "OutputFailed",
    "RunReport",
    "ingest",
    "reconcile",
    "reconcile_flow",
    "run_lock",
    "run_once",
]
