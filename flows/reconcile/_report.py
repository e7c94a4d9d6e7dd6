"""What one reconcile run did, in one typed object: the ``pipeline_runs`` row, the Prefect markdown summary,
the terminal summary and the flow's return value all read it, so they cannot disagree."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from memberpulse.flows.publish import PipelineRun, RunStatus

# A first run over a big company can put 100k members "newly at risk"; the artifact lists the first ones and
# the summary says how many (Prefect refuses events of tens of MB, and nobody reads such a table).
AT_RISK_LISTED = 1000
_TIMES = ("as_of", "started_at", "finished_at")


@dataclass
class RunReport:
    run_id: str
    as_of: datetime
    started_at: datetime
    finished_at: datetime | None = None
    status: RunStatus = "running"
    full_refresh: bool = False
    records_read: int = 0
    events_ingested: int = 0
    rejects: int = 0
    landing_rejections: int = 0
    unknown_events: int = 0
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
    newly_at_risk_count: int = 0
    newly_at_risk: list[dict[str, Any]] = field(default_factory=list)  # the first AT_RISK_LISTED of them
    error: str | None = None
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
        )

    def summary_rows(self) -> list[tuple[str, str]]:
        """(measure, value) rows both summaries show; publish counts only when something was published to."""
        rows: list[tuple[str, object]] = [
            ("raw records read", self.records_read),
            ("events ingested", self.events_ingested),
            ("rejects (unparseable records)", self.rejects),
            ("refused by the landing (quarantine)", self.landing_rejections),
            ("unknown event types", self.unknown_events),
            ("members", self.members),
            ("published to", self.publish_target or "nowhere (no SUPABASE_DB_URL or SUPABASE_URL set)"),
        ]
        if self.publish_target:
            rows.append(("rows inserted / updated / unchanged", f"{self.inserted} / {self.updated} / {self.unchanged}"))
        if self.whop_failed_deliveries is not None:
            rows.append(("failed deliveries in Whop's log (last recovery)", self.whop_failed_deliveries))
            rows.append(("  of them never reached the landing", self.unlogged_text))
        rows += [
            ("drift (API vs webhooks)", self.drift_count),
            ("newly at risk", self.newly_at_risk_count),
            ("snapshot", self.snapshot_path),
            ("seconds per step", ", ".join(f"{k} {v}" for k, v in self.seconds.items())),
        ]
        return [(name, str(value)) for name, value in rows]

    @property
    def unlogged_text(self) -> str:
        n, messages = self.whop_unlogged_failures or 0, self.whop_unlogged_messages
        if not n:
            return "0"
        return f"{n} attempt(s), {messages} message(s): Whop saw failures the landing never logged"

    @property
    def title(self) -> str:
        refresh = " (full refresh)" if self.full_refresh else ""
        return f"Reconcile run {self.run_id[:8]} as of {self.as_of.isoformat()}{refresh}"

    def markdown(self) -> str:
        """The Prefect artifact: the summary rows, then members per status."""
        measures = "\n".join(f"| {name} | {value} |" for name, value in self.summary_rows())
        by_status = "\n".join(f"| {k} | {v} |" for k, v in sorted(self.members_by_status.items()))
        return (
            f"# {self.title}\n\n| measure | value |\n|---|---|\n{measures}\n\n"
            f"| status | members |\n|---|---|\n{by_status}\n"
        )

    def print_summary(self, console: Console | None = None) -> None:
        """The terminal view: the same rows, members per status indented under "members"."""
        table = Table(title=self.title, show_lines=False)
        table.add_column("measure")
        table.add_column("value", justify="right")
        for name, value in self.summary_rows():
            table.add_row(name, value)
            if name == "members":
                for status, n in sorted(self.members_by_status.items()):
                    table.add_row(f"  {status}", str(n))
        (console or Console()).print(table)

    # --- the flow's return value ----------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        """Plain values (times as ISO 8601), as the flow returns and Prefect records them."""
        values = dataclasses.asdict(self)
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunReport:
        times = {k: datetime.fromisoformat(values[k]) for k in _TIMES if values.get(k) is not None}
        return cls(**{**values, **times})
