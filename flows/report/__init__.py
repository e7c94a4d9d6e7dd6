"""The analysts' report: one self-contained HTML page (Plotly, its script inlined) from the latest snapshot.

An index across companies when the snapshot has more than one (members by status, churn and drift per company);
members by status over time, the engagement score distribution, weekly join cohorts × weeks retained, churn
per week, members newly at risk this week, drift by kind and pipeline health. Every number is aggregated in
DuckDB; the page carries only the aggregates, so its size does not grow with the member count.

The numbers a reader sees agree or say why not: the drift bars count each membership once (so they add up to
the headline), the pipeline chart shows the run summary's own counts under its names, and a chart that shows
only the newest part of something says so. Each chart follows its card's width (``_page``).
"""

from __future__ import annotations

from memberpulse.flows.report._build import (
    CHART_NAMES,
    COMPANY_INDEX_CHART,
    REPORT_NAME,
    build_report,
    report_charts,
    write_report,
    write_run_report,
)
from memberpulse.flows.report._charts import Chart

__all__ = [
    "CHART_NAMES",
    "COMPANY_INDEX_CHART",
    "REPORT_NAME",
    "Chart",
    "build_report",
    "report_charts",
    "write_report",
    "write_run_report",
]
