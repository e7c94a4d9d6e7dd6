"""What one run did per company: the run report's company lines, and the warehouse log behind the snapshot's
``pipeline_run_companies`` table.

A line counts, for one company (``company_id`` null: what no webhook or API response named a company for), the
members the run scored, those whose published values it changed and sent to the target, the new events it read,
the raw records it could not parse whose verified body names the company, and the memberships drifting. Only the
companies the run touched get a line (new events, failures, changed rows), so a quiet run over a thousand
companies records a few lines, not a thousand; the lines' events, rejects and changed rows add up to the run's.
A landing refusal is counted on no company's line: its body is unverified (``publish._failure_company``).

The log (``warehouse/published/pipeline_run_companies.parquet``, written through the state codec) keeps the
last :data:`LINES_KEPT` of runs; the snapshot's table is that log with the run being snapshotted in place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import polars as pl

from memberpulse.contracts.tables import PIPELINE_RUN_COMPANIES
from memberpulse.flows.publish import failure_company
from memberpulse.flows.state_codec import RUN_COMPANY_LOG, read_table_if_present, write_table

#: How far back the per-company run log reaches (older lines go when a run is recorded).
LINES_KEPT: Final = timedelta(days=90)
#: The lines a terminal summary and the Prefect artifact list (busiest first); the report keeps them all.
COMPANIES_LISTED: Final = 25
_MEASURES: Final = ("members", "members_changed", "rows_published", "events_ingested", "rejects", "drift_count")


@dataclass(frozen=True)
class CompanyLine:
    """One company's share of a run (see the module docstring); ``company_id`` None: no company named."""

    company_id: str | None
    members: int = 0
    members_changed: int = 0
    rows_published: int = 0
    events_ingested: int = 0
    rejects: int = 0
    drift_count: int = 0

    @property
    def touched(self) -> bool:
        return bool(self.events_ingested or self.rejects or self.members_changed)

    def cells(self) -> list[str]:
        """The line as the summaries show it (a company is never shown as "None")."""
        return [self.company_id or "(no company named)", *(str(getattr(self, m)) for m in _MEASURES)]


#: The summaries' column headings, in the order of :meth:`CompanyLine.cells`.
COMPANY_HEADINGS: Final = ("company", "members", "changed", "published", "new events", "rejects", "drift")


def count_per_company(
    *,
    members: pl.DataFrame | None,
    changed: pl.DataFrame | None,
    published: bool,
    events: pl.DataFrame | None,
    rejects: pl.DataFrame | None,
    drift: pl.DataFrame | None,
) -> list[CompanyLine]:
    """The lines of the companies these frames touch (each frame carries ``company_id``; ``rejects`` are failures
    as found, whose company is read from their verified bodies), sorted by company (no company last).
    ``published``: the changed rows reached the target."""
    found_in = {
        "members": members,
        "members_changed": changed,
        "rows_published": changed if published else None,
        "events_ingested": events,
        "rejects": None if rejects is None else rejects.select(failure_company(rejects)),
        "drift_count": drift,
    }
    counts = [_counted(frame, measure) for measure, frame in found_in.items()]
    joined = pl.concat(counts, how="diagonal_relaxed").group_by("company_id").agg(pl.col(_MEASURES).sum())
    lines = [CompanyLine(**row) for row in joined.sort("company_id", nulls_last=True).iter_rows(named=True)]
    return [line for line in lines if line.touched]


def _counted(frame: pl.DataFrame | None, measure: str) -> pl.DataFrame:
    schema = pl.Schema({"company_id": pl.String(), measure: pl.Int64()})
    if frame is None or frame.height == 0:
        return pl.DataFrame(schema=schema)
    return frame.group_by("company_id").agg(pl.len().cast(pl.Int64).alias(measure)).cast(schema)


def busiest_first(lines: list[CompanyLine]) -> list[CompanyLine]:
    """The order the summaries list lines in: most changed rows, then most new events, then by company."""
    return sorted(lines, key=lambda line: (-line.members_changed, -line.events_ingested, line.company_id or "~"))


def lines_from_dicts(values: list[dict[str, Any]]) -> list[CompanyLine]:
    return [CompanyLine(**value) for value in values]


# --- the warehouse log behind the snapshot's pipeline_run_companies -----------------------------------------------


def log_path(warehouse_dir: Path) -> Path:
    return warehouse_dir / "published" / f"{PIPELINE_RUN_COMPANIES.name}.parquet"


def run_companies_with(
    warehouse_dir: Path, run_id: str, started_at: datetime, lines: list[CompanyLine]
) -> pl.DataFrame:
    """The log with this run's lines in place (by run_id), runs older than ``LINES_KEPT`` before it left out,
    sorted by start and company; writes nothing."""
    rows = pl.DataFrame(
        [{"run_id": run_id, "started_at": started_at, **asdict(line)} for line in lines],
        schema=PIPELINE_RUN_COMPANIES.schema,
    )
    previous = read_table_if_present(log_path(warehouse_dir), RUN_COMPANY_LOG)
    if previous is not None:
        kept = (pl.col("run_id") != run_id) & (pl.col("started_at") >= started_at - LINES_KEPT)
        rows = pl.concat([previous.filter(kept).select(PIPELINE_RUN_COMPANIES.names), rows], how="vertical_relaxed")
    return rows.sort("started_at", "company_id", nulls_last=True)


def record_run_companies(warehouse_dir: Path, log: pl.DataFrame) -> None:
    """Replace the log with ``log`` (from :func:`run_companies_with`)."""
    write_table(log.select(PIPELINE_RUN_COMPANIES.names), log_path(warehouse_dir))
