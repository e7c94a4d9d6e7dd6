"""Build the report from the latest snapshot, write it atomically, and the reconcile run's hook for it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import duckdb

from memberpulse.errors import ConfigError
from memberpulse.flows.fsio import atomic_output, atomic_write_bytes
from memberpulse.flows.report import _charts, _page, _queries
from memberpulse.flows.report._charts import Chart
from memberpulse.flows.snapshot import (
    latest_path,
    open_latest,
    open_snapshot_file,
    scoped_file_name,
    scoped_snapshot,
)

REPORT_NAME = "report.html"
log = logging.getLogger("memberpulse.report")

# (name, query, chart of the query's result, spans both columns)
_CHARTS: tuple[tuple[str, Callable[[duckdb.DuckDBPyConnection], Any], Callable[[Any], Chart], bool], ...] = (
    ("status-over-time", _queries.status_over_time, _charts.status_over_time, False),
    ("score-distribution", _queries.score_distribution, _charts.score_distribution, False),
    ("cohort-retention", _queries.cohort_retention, _charts.cohort_heatmap, True),
    ("churn-per-week", _queries.churn_per_week, _charts.churn_per_week, False),
    ("drift-by-kind", _queries.drift_by_kind, _charts.drift_by_kind, False),
    ("pipeline-health", _queries.pipeline_health, _charts.pipeline_health, True),
)
CHART_NAMES: tuple[str, ...] = tuple(name for name, *_ in _CHARTS)
# The chart of the index across companies, first on the page when the snapshot has more than one company.
COMPANY_INDEX_CHART = "companies"


@contextmanager
def _latest(snapshots_dir: Path, companies: Sequence[str] = ()) -> Iterator[duckdb.DuckDBPyConnection]:
    """The latest snapshot, or with ``companies`` its scoped copy (only their rows: ``snapshot.scoped_snapshot``)."""
    if not latest_path(snapshots_dir).is_file():
        raise ConfigError(
            f"no snapshot yet at {latest_path(snapshots_dir)}",
            hint="run `memberpulse run` (or `memberpulse demo`) to write the first one",
        )
    with ExitStack() as stack:
        scoped = stack.enter_context(scoped_snapshot(snapshots_dir, companies)) if companies else None
        con = open_snapshot_file(scoped) if scoped else open_latest(snapshots_dir)
        try:
            con.execute("SET TimeZone = 'UTC'")
            yield con
        finally:
            con.close()


def _charts_of(con: duckdb.DuckDBPyConnection) -> dict[str, Chart]:
    return {name: chart(query(con)) for name, query, chart, _ in _CHARTS}


def report_charts(snapshots_dir: Path, companies: Sequence[str] = ()) -> dict[str, Chart]:
    """The charts of the latest snapshot's report by name (heading, note, figure), exactly as the page has them."""
    with _latest(snapshots_dir, companies) as con:
        return _charts_of(con)


def build_report(snapshots_dir: Path, companies: Sequence[str] = ()) -> str:
    """The report of ``snapshots_dir/latest.duckdb`` as one self-contained HTML page; with ``companies``, of
    their members only."""
    with _latest(snapshots_dir, companies) as con:
        overview, charts, at_risk = _queries.overview(con), _charts_of(con), _queries.newly_at_risk(con)
        index = _queries.company_index(con)
    sections = [_page.chart_html(name, charts[name], wide=wide) for name, *_, wide in _CHARTS]
    sections.insert(5, _page.at_risk_html(at_risk))
    if index.total > 1:  # an index across companies, first, when there is more than one to compare
        chart = _page.chart_html(COMPANY_INDEX_CHART, _charts.company_index(index), wide=True)
        sections[:0] = [chart, _page.company_index_html(index)]
    return _page.page_html(overview, sections, source=str(latest_path(snapshots_dir)), companies=companies)


def default_report_path(snapshots_dir: Path, companies: Sequence[str] = ()) -> Path:
    """``report.html`` beside the snapshot; a scoped report beside it under its companies' name, so it never
    replaces the whole deployment's."""
    return snapshots_dir / (f"report-{scoped_file_name(companies)}.html" if companies else REPORT_NAME)


def write_report(snapshots_dir: Path, out: Path | None = None, *, companies: Sequence[str] = ()) -> Path:
    """Build the report and replace ``out`` (default :func:`default_report_path`) with it atomically."""
    page = build_report(snapshots_dir, companies).encode("utf-8")
    if out is None:
        out = default_report_path(snapshots_dir, companies)
        atomic_write_bytes(out, page)
        return out
    with atomic_output(out) as tmp:  # a file a person named: its folder must exist and be writable (exit 2)
        tmp.write_bytes(page)
    return out


def write_run_report(snapshots_dir: Path, logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log) -> str:
    """The reconcile run's report next to its snapshot; never raises (the run's other outputs stand).

    Returns the report's path, or ``"not written: <why>"``. Inside a Prefect flow run, a link artifact points
    at the file.
    """
    try:
        path = write_report(snapshots_dir)
    except Exception as exc:
        logger.warning("analyst report not written: %s", exc)
        return f"not written: {exc}"
    logger.info("analyst report written: %s", path)
    _link_artifact(path, logger)
    return str(path)


def _link_artifact(path: Path, logger: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
    context = sys.modules.get("prefect.context")  # not imported: not a flow run (the CLI's one-off run)
    if context is None or context.FlowRunContext.get() is None:
        return
    from prefect.artifacts import create_link_artifact

    try:
        create_link_artifact(path.resolve().as_uri(), link_text=str(path), key="analyst-report",
                             description="The analysts' report of this run's snapshot (open in a browser)")  # fmt: skip
    except Exception as exc:  # the artifact is a pointer; the report itself is written
        logger.warning("could not record the report's artifact: %s", exc)
