"""What one reconcile run did, in one typed object: the ``pipeline_runs`` row, the Prefect markdown summary,
the terminal summary and the flow's return value all read it, so they cannot disagree."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import polars as pl
from rich.console import Console
from rich.table import Table
from rich.text import Text

from memberpulse.errors import MemberpulseError
from memberpulse.flows.publish import REFUSED_LABEL, REJECTS_LABEL, PipelineRun, RunStatus

# A first run over a big company can put 100k members "newly at risk"; the artifact lists the first ones and
# the summary says how many (Prefect refuses events of tens of MB, and nobody reads such a table).
AT_RISK_LISTED = 1000
_TIMES = ("as_of", "started_at", "finished_at", "last_as_of")
RunMode = Literal["run", "dry-run", "backdated"]
BELOW_TABLE = ("data dir", "snapshot", "analyst report", "WARNING")  # printed whole, under the table


@dataclass
class RunReport:
    run_id: str
    as_of: datetime
    started_at: datetime
    finished_at: datetime | None = None
    status: RunStatus = "running"
    full_refresh: bool = False
    # "run" commits, publishes and swaps latest.duckdb; "dry-run" none of these; "backdated" (as-of earlier than
    # the last committed run's, ``last_as_of``) writes only its own snapshot file.
    mode: RunMode = "run"
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

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 3)

    # --- the three views ------------------------------------------------------------------------------------

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

    def markdown(self) -> str:
        """The Prefect artifact: the summary rows, then members per status."""
        measures = "\n".join(f"| {name} | {value} |" for name, value in self.summary_rows())
        by_status = "\n".join(f"| {k} | {v} |" for k, v in sorted(self.members_by_status.items()))
        return (
            f"# {self.title}\n\n| measure | value |\n|---|---|\n{measures}\n\n"
            f"| status | members |\n|---|---|\n{by_status}\n"
        )

    def print_summary(self, console: Console | None = None) -> None:
        """The terminal view: the same rows, members per status indented under "members"; paths whole below
        the table (a table cell would cut them with "…"). Every value is plain text, never rich markup."""
        table = Table(title=Text(self.title), show_lines=False)
        table.add_column("measure")
        table.add_column("value", justify="right")
        paths = []
        for name, value in self.summary_rows():
            if name in BELOW_TABLE:
                paths.append((name, value))
                continue
            table.add_row(Text(name), Text(value))
            if name == "members":
                for status, n in sorted(self.members_by_status.items()):
                    table.add_row(Text(f"  {status}"), Text(str(n)))
        console = console or Console()
        console.print(table)
        for name, value in paths:
            console.print(Text(f"{name}: {value}"), soft_wrap=True)

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
        return cls(**{k: v for k, v in {**values, **times}.items() if k in known})
