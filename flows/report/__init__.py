"""The analysts' report: one self-contained HTML page (Plotly, its script inlined) from the latest snapshot.

Members by status over time, the engagement score distribution, weekly join cohorts × weeks retained, churn
per week, members newly at risk this week, drift by kind and pipeline health. Every number is aggregated in
DuckDB; the page carries only the aggregates, so its size does not grow with the member count.
"""

from __future__ import annotations

from memberpulse.flows.report._build import CHART_NAMES, REPORT_NAME, build_report, write_report, write_run_report

__all__ = ["CHART_NAMES", "REPORT_NAME", "build_report", "write_report", "write_run_report"]
