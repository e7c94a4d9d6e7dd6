"""What one reconcile run did, in one typed object: the ``pipeline_runs`` row, the Prefect markdown summary,
the terminal summary, ``memberpulse run --json`` and the flow's return value all read it, so they cannot
disagree. The flow builds it in one place, :func:`assemble_report`, from what the steps returned."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import polars as pl

from memberpulse.errors import MemberpulseError
from memberpulse.flows.publish import REFUSED_LABEL, REJECTS_LABEL, PipelineRun, PublishResult, RunStatus
from memberpulse.flows.raw.archive import CompactionResult
from memberpulse.flows.reconcile._companies import (
    COMPANIES_LISTED,
    COMPANY_HEADINGS,
    CompanyLine,
    busiest_first,
    count_per_company,
    lines_from_dicts,
)
from memberpulse.flows.reconcile._ingest import Ingested
from memberpulse.flows.reconcile._step_list import RunMode, Step
from memberpulse.flows.reconcile._steps import Published, RunStart, Scored, Snapshotted

# A first run over a big company can put 100k members "newly at risk"; the artifact lists the first ones and
# the summary says how many (Prefect refuses events of tens of MB, and nobody reads such a table).
AT_RISK_LISTED = 1000
_TIMES = ("as_of", "started_at", "finished_at", "last_as_of")
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class RunReport:
    """Plain values (the flow's return value is this, as a dict), frozen: built once, never written by a step."""

    run_id: str
    as_of: datetime
    started_at: datetime
    finished_at: datetime | None = None
    status: RunStatus = "running"
    full_refresh: bool = False
    mode: RunMode = "run"  # see ``_step_list.RunMode``
    last_as_of: datetime | None = None
    records_read: int = 0
    events_ingested: int = 0
    rejects: int = 0
    landing_rejections: int = 0
    unknown_events: int = 0
    test_webhooks: int = 0
    test_webhooks_included: bool = False
    members: int = 0
    members_by_status: dict[str, int] = field(default_factory=dict)
    publish_target: str | None = None
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    drift_count: int = 0
    # Whop's delivery log as the last recovery read it (None: recovery never ran).
    whop_failed_deliveries: int | None = None
    whop_unlogged_failures: int | None = None  # failed attempts for messages the landing has no trace of
    whop_unlogged_messages: int = 0
    snapshot_path: str | None = None
    analyst_report: str | None = None  # its path, or "not written: <why>" (a report never fails the run)
    newly_at_risk_count: int = 0
    newly_at_risk: list[dict[str, Any]] = field(default_factory=list)  # the first AT_RISK_LISTED of them
    error: str | None = None
    publish_error: str | None = None  # the publish failed; every other output was still written
    # The publish error itself, for the flow to raise once the other outputs are written (not serialised).
    publish_failure: MemberpulseError | None = field(default=None, repr=False, compare=False)
    # A dry run's rows it would insert or update (``action`` first); not serialised (the CLI prints them).
    would_publish: pl.DataFrame | None = field(default=None, repr=False, compare=False)
    data_dir: str | None = None  # absolute
    warnings: list[str] = field(default_factory=list)  # what a person should look at although the run completed
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step
    # What the run did per company, for the companies it touched (``_companies``), by company.
    companies: list[CompanyLine] = field(default_factory=list)

    # --- the views: the pipeline_runs row, the summary rows (the CLI draws them), the Prefect artifact -------

    def pipeline_run(self) -> PipelineRun:
        """This run as a row of ``pipeline_runs``."""
        return PipelineRun(
            run_id=self.run_id,
            flow="reconcile",
            started_at=self.started_at,
            status=self.status,
            finished_at=self.finished_at,
            events_ingested=self.events_ingested,
            rejects=self.rejects,
            rows_inserted=self.inserted,
            rows_updated=self.updated,
            rows_unchanged=self.unchanged,
            drift_count=self.drift_count,
            error=self.error,
            landing_rejections=self.landing_rejections,
        )

    def summary_rows(self) -> list[tuple[str, str]]:
        """(measure, value) rows both summaries show; publish counts only when something was published to."""
        rows: list[tuple[str, object]] = [
            ("data dir", self.data_dir),
            ("raw records read", self.records_read),
            ("events ingested", self.events_ingested),
            (REJECTS_LABEL, self.rejects),
            (REFUSED_LABEL, self.landing_rejections),
            ("unknown event types", self.unknown_events),
            (
                "test webhooks (send-test, test_ ids)",
                f"{self.test_webhooks} ({'included' if self.test_webhooks_included else 'not scored or published'})",
            ),
            ("members", self.members),
            ("published to", self._published_to()),
        ]
        counts = f"{self.inserted} / {self.updated} / {self.unchanged}"
        if self.mode == "dry-run":
            rows.append(("rows it would insert / update / leave unchanged", counts))
        elif self.publish_target and self.mode == "run" and not self.publish_error:
            rows.append(("rows inserted / updated / unchanged", counts))
        if self.whop_failed_deliveries is not None:
            rows.append(("failed deliveries in Whop's log (last recovery)", self.whop_failed_deliveries))
            rows.append(("  of them never reached the landing", self.unlogged_text))
        rows += [
            ("drift (API vs webhooks)", self.drift_count),
            ("newly at risk", self.newly_at_risk_count),
            ("snapshot", self._snapshot_text()),
            ("analyst report", self._analyst_report_text()),
            ("seconds per step", ", ".join(f"{k} {v}" for k, v in self.seconds.items())),
        ]
        rows += [("WARNING", warning) for warning in self.warnings]
        return [(name, str(value)) for name, value in rows]

    def _published_to(self) -> str:
        target = self.publish_target or "nowhere (no SUPABASE_DB_URL or SUPABASE_URL set)"
        if self.mode == "dry-run":
            return f"nothing (dry run; target {target})"
        if self.mode == "backdated":
            last = self.last_as_of.isoformat() if self.last_as_of else "?"
            return f"nothing: as-of is earlier than the last run's ({last}); the present is left as it is"
        if self.publish_error:
            return f"FAILED: {target} (the rows stay pending for the next run)"
        return target

    def _snapshot_text(self) -> str:
        if self.mode == "dry-run":
            return "none written (dry run)"
        if self.mode == "backdated":
            return f"{self.snapshot_path} (its own file; latest.duckdb unchanged)"
        return str(self.snapshot_path)

    def _analyst_report_text(self) -> str:
        if self.analyst_report is not None:
            return self.analyst_report
        return {"dry-run": "none written (dry run)", "backdated": "not written (backdated run)"}.get(
            self.mode, "not written"
        )

    @property
    def unlogged_text(self) -> str:
        n, messages = self.whop_unlogged_failures or 0, self.whop_unlogged_messages
        if not n:
            return "0"
        return f"{n} attempt(s), {messages} message(s): Whop saw failures the landing never logged"

    @property
    def title(self) -> str:
        refresh = " (full refresh)" if self.full_refresh else ""
        mode = {"run": "", "dry-run": " (dry run: nothing written)", "backdated": " (backdated: nothing committed)"}
        return f"Reconcile run {self.run_id[:8]} as of {self.as_of.isoformat()}{refresh}{mode[self.mode]}"

    def company_rows(self) -> tuple[list[list[str]], str | None]:
        """The per-company table both summaries show (the busiest ``COMPANIES_LISTED`` lines), and a note
        saying how many more there are, or None."""
        lines = busiest_first(self.companies)
        more = len(lines) - COMPANIES_LISTED
        note = f"… and {more} more companies (all of them: --json, or the snapshot's pipeline_run_companies)"
        return [line.cells() for line in lines[:COMPANIES_LISTED]], note if more > 0 else None

    def markdown(self) -> str:
        """The Prefect artifact: the summary rows, members per status, then what the run did per company."""
        measures = "\n".join(f"| {name} | {value} |" for name, value in self.summary_rows())
        by_status = "\n".join(f"| {k} | {v} |" for k, v in sorted(self.members_by_status.items()))
        rows, note = self.company_rows()
        companies = "".join(f"| {' | '.join(cells)} |\n" for cells in rows)
        per_company = (
            f"\n| {' | '.join(COMPANY_HEADINGS)} |\n|{'---|' * len(COMPANY_HEADINGS)}\n{companies}{note or ''}\n"
            if rows
            else ""
        )
        return (
            f"# {self.title}\n\n| measure | value |\n|---|---|\n{measures}\n\n"
            f"| status | members |\n|---|---|\n{by_status}\n{per_company}"
        )

    # --- the flow's return value ----------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        """Plain values (times as ISO 8601), as the flow returns and Prefect records them."""
        values = dataclasses.asdict(dataclasses.replace(self, publish_failure=None, would_publish=None))
        values.pop("publish_failure")
        values.pop("would_publish")
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunReport:
        """The report inside a flow's return value (which may carry more keys, e.g. an event-driven run's passes)."""
        known = {f.name for f in dataclasses.fields(cls)}
        times = {k: datetime.fromisoformat(values[k]) for k in _TIMES if values.get(k) is not None}
        lines = {"companies": lines_from_dicts(values.get("companies") or [])}
        return cls(**{k: v for k, v in {**values, **times, **lines}.items() if k in known})


@dataclass
class StepResults:
    """What the steps of one run returned so far (None: not taken yet, or not in this run's mode), and how
    long each took. Only the flow writes it, one step's value at a time."""

    ingested: Ingested | None = None
    scored: Scored | None = None
    published: Published | None = None
    drift: pl.DataFrame | None = None
    snapshot: Snapshotted | None = None
    analyst_report: str | None = None  # its path, or "not written: <why>"
    compaction: CompactionResult | None = None
    finished_at: datetime | None = None  # set once the run's outcome is decided (before its outputs are written)
    seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, step: Step, mode: RunMode, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args, **kwargs)``, its wall time kept under the step's name."""
        assert mode in step.modes, f"a {mode} run does not take the {step.name} step (_step_list.STEPS)"
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[step.name] = round(time.perf_counter() - started, 3)


def assemble_report(start: RunStart, done: StepResults, *, error: str | None = None) -> RunReport:
    """The run's report from what it knew at its start and what its steps returned: the one place it is built.
    ``error``: what stopped the run; a failed publish alone also fails it."""
    ingested, scored, published = done.ingested, done.scored, done.published
    health = done.snapshot.delivery_health if done.snapshot else None
    result, failure = (published.result, published.failure) if published else (None, None)
    if error is None and failure is not None:
        error = f"publish failed: {failure.message}; the snapshot was written"
    at_risk = published.newly_at_risk if published else []
    return RunReport(
        run_id=start.run_id,
        as_of=start.as_of,
        started_at=start.started_at,
        finished_at=done.finished_at,
        status="failed" if error else ("completed" if done.finished_at else "running"),
        full_refresh=start.full_refresh,
        mode=start.mode,
        last_as_of=start.last_as_of,
        records_read=ingested.records_read if ingested else 0,
        events_ingested=ingested.events_ingested if ingested else 0,
        rejects=len(ingested.rejects) if ingested else 0,
        landing_rejections=len(ingested.landing_rejections) if ingested else 0,
        unknown_events=ingested.unknown_events if ingested else 0,
        test_webhooks=ingested.test_webhooks if ingested else 0,
        test_webhooks_included=start.test_webhooks_included,
        members=len(scored.members) if scored else 0,
        members_by_status=scored.by_status() if scored else {},
        publish_target=start.publish_target,
        inserted=result.inserted if result else 0,
        updated=result.updated if result else 0,
        unchanged=result.unchanged if result else 0,
        drift_count=len(done.drift) if done.drift is not None else 0,
        whop_failed_deliveries=health.failed_attempts if health else None,
        whop_unlogged_failures=health.unlogged_failures if health else None,
        whop_unlogged_messages=health.unlogged_messages if health else 0,
        snapshot_path=done.snapshot.path if done.snapshot else None,
        analyst_report=done.analyst_report,
        newly_at_risk_count=len(at_risk),
        newly_at_risk=at_risk[:AT_RISK_LISTED],
        error=error,
        publish_error=failure.message if failure else None,
        publish_failure=failure,
        would_publish=published.would_publish if published else None,
        data_dir=start.data_dir,
        warnings=_warnings(start, ingested, result, done.compaction),
        seconds=dict(done.seconds),
        companies=_company_lines(start, done),
    )


def _company_lines(start: RunStart, done: StepResults) -> list[CompanyLine]:
    """What the run did per company, from what its steps returned. A changed row is one the run stamped with
    its ``run_at`` (``updated_at``); a backdated run changes nothing in the present."""
    ingested, scored, published = done.ingested, done.scored, done.published
    changed = None
    if published is not None and start.mode != "backdated":
        changed = published.table.filter(pl.col("updated_at") == start.started_at)
    sent = bool(start.publish_target and published and published.result and not published.failure)
    return count_per_company(
        members=scored.members if scored else None,
        changed=changed,
        published=sent and start.mode == "run",
        events=ingested.new_events if ingested else None,
        rejects=ingested.rejects if ingested else None,
        drift=done.drift,
    )


def _warnings(
    start: RunStart, ingested: Ingested | None, result: PublishResult | None, compaction: CompactionResult | None
) -> list[str]:
    """What a person should look at although the run completed: the run's placing (clock, fold setting, data
    dir), raw segments changed after ingestion (found by the offset check or by compaction), a publish target
    put right."""
    repaired = [result.repaired] if result and result.repaired else []
    raw = [*(ingested.raw_warnings if ingested else []), *(compaction.warnings if compaction else [])]
    return [*start.warnings, *raw, *repaired]
