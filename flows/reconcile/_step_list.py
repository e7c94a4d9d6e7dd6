"""The reconcile run's steps, in order: the one list the flow runs, the Prefect task names and the docs refer to.

Each step is safe to crash in (see the package docstring for why). A step's ``name`` is its key in the run
report's seconds per step and, where the step is a tracked Prefect task inside a flow run, the task's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# "run" commits, publishes and swaps latest.duckdb; "dry-run" none of these; "backdated" (an as-of earlier than
# the last committed run's) writes only its own snapshot file.
RunMode = Literal["run", "dry-run", "backdated"]
ALL_MODES: frozenset[RunMode] = frozenset({"run", "dry-run", "backdated"})
COMMITTING: frozenset[RunMode] = frozenset({"run"})


@dataclass(frozen=True)
class Step:
    name: str
    does: str  # one line, for people
    modes: frozenset[RunMode]  # the runs that take this step
    # Inside a flow run the step's outside-world call is the Prefect task ``name``, retried this many times on
    # a TransientError; None: a plain call, never a task.
    task_retries: int | None = None


STEPS: tuple[Step, ...] = (
    Step(
        "ingest",
        "read raw lines appended since the last commit (and backfill snapshots not folded yet), parse, dedupe, "
        "fold into member state; a run commits state and offsets at once",
        ALL_MODES,
        task_retries=2,
    ),
    Step("score", "every member as of T (now, or --as-of); a run keeps the scores as history", ALL_MODES),
    Step(
        "publish",
        "only the rows that changed since the target's last publish, in the target's transaction; a failure is "
        "noted, not raised, so the snapshot still gets this run's rows; a dry run only counts them",
        ALL_MODES,
        # The publisher retries transient failures itself; retrying its final failure would multiply them.
        task_retries=0,
    ),
    Step("drift", "memberships where Whop's API (the latest backfill) and the webhooks disagree", ALL_MODES),
    Step(
        "snapshot",
        "a new DuckDB file swapped in as snapshots/latest.duckdb (backdated: snapshots/as-of/<as-of>.duckdb)",
        frozenset({"run", "backdated"}),
        task_retries=0,
    ),
    Step("report", "the analysts' HTML report beside the snapshot (never fails the run)", COMMITTING),
    Step(
        "record",
        "the run's lines per company (pipeline_run_companies), then the run in pipeline_runs (the run log and the "
        "target): only now, so no record says completed while an output is missing",
        COMMITTING,
    ),
    Step("compact", "landing segments past the retention window into the daily raw archive", COMMITTING),
)
INGEST, SCORE, PUBLISH, DRIFT, SNAPSHOT, REPORT, RECORD, COMPACT = STEPS


def steps_for(mode: RunMode) -> tuple[Step, ...]:
    """The steps a run in ``mode`` takes, in order."""
    return tuple(step for step in STEPS if mode in step.modes)
