"""The report's charts as Plotly figures, built from the small query results in ``_queries``."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

from memberpulse.flows.report._queries import Rows

STATUS_COLOURS = {"active": "#2e9d5b", "at_risk": "#f0a202", "inactive": "#9aa0a6"}
STATUS_LABELS = {"active": "active", "at_risk": "at risk", "inactive": "inactive"}
CHURN_COLOUR = "#c0392b"
FAILED_COLOUR = "#c0392b"
NEUTRAL_COLOUR = "#4a6fa5"
HEIGHT = 360


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, *, height: int = HEIGHT, **extra: Any) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 17}},
        template="plotly_white",
        height=height,
        margin={"l": 64, "r": 24, "t": 56, "b": 56},
        font={"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right", "traceorder": "normal"},
        xaxis_title=x_title,
        yaxis_title=y_title,
        **extra,
    )
    return fig


def _note_if_empty(fig: go.Figure, empty: bool, text: str) -> go.Figure:
    if empty:
        fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font={"size": 14, "color": "#666"})  # fmt: skip
    return fig


def status_over_time(rows: Rows) -> go.Figure:
    days = [str(r[0]) for r in rows]
    fig = go.Figure()
    for index, status in enumerate(("active", "at_risk", "inactive"), start=1):
        fig.add_bar(x=days, y=[r[index] for r in rows], name=STATUS_LABELS[status],
                    marker_color=STATUS_COLOURS[status])  # fmt: skip
    _layout(fig, "Members by status, per day", "day (UTC, the day's last run)", "members", barmode="stack", bargap=0.4)
    fig.update_xaxes(type="category" if len(days) < 3 else "date")
    return _note_if_empty(fig, not rows, "no runs in the history yet")


def score_distribution(rows: Rows) -> go.Figure:
    fig = go.Figure()
    for status in ("active", "at_risk", "inactive"):
        mine = [r for r in rows if r[0] == status]
        fig.add_bar(x=[r[1] + 2.5 for r in mine], y=[r[2] for r in mine], width=5, name=STATUS_LABELS[status],
                    marker_color=STATUS_COLOURS[status], marker_line={"width": 0.5, "color": "white"},
                    hovertemplate="score %{x:.0f} ±2.5: %{y} members<extra></extra>")  # fmt: skip
    _layout(fig, "Engagement score distribution", "engagement score (0–100, buckets of 5)", "members",
            barmode="stack")  # fmt: skip
    fig.update_xaxes(range=[0, 105], dtick=10)
    return _note_if_empty(fig, not rows, "no scored members yet")


def cohort_heatmap(rows: Rows) -> go.Figure:
    cohorts = sorted({str(r[0]) for r in rows})
    weeks = sorted({int(r[1]) for r in rows})
    cell = {(str(r[0]), int(r[1])): r for r in rows}
    z = [[(100 * cell[c, w][2]) if (c, w) in cell else None for w in weeks] for c in cohorts]
    text = [[f"{cell[c, w][3]} of {cell[c, w][4]}" if (c, w) in cell else "" for w in weeks] for c in cohorts]
    fig = go.Figure(
        go.Heatmap(
            x=weeks, y=cohorts, z=z, text=text, zmin=0, zmax=100, colorscale="Greens", xgap=1, ygap=1,
            colorbar={"title": {"text": "% retained"}, "ticksuffix": "%"},
            hovertemplate="joined week of %{y}<br>week %{x}: %{z:.0f}% retained (%{text})<extra></extra>",
        )
    )  # fmt: skip
    _layout(fig, "Weekly join cohorts: share still members, by weeks since joining", "weeks since joining",
            "cohort (week joined)", height=max(HEIGHT, 120 + 18 * len(cohorts)))  # fmt: skip
    fig.update_yaxes(autorange="reversed", type="category")
    return _note_if_empty(fig, not rows, "no members with a join date yet")


def churn_per_week(rows: Rows) -> go.Figure:
    fig = go.Figure(go.Bar(x=[str(r[0]) for r in rows], y=[r[1] for r in rows], marker_color=CHURN_COLOUR,
                           name="went invalid", hovertemplate="week of %{x}: %{y} members<extra></extra>"))  # fmt: skip
    _layout(fig, "Churn: members who went invalid, per week", "week (Monday, UTC)", "members")
    fig.update_xaxes(type="date")
    return _note_if_empty(fig, not rows, "no member has gone invalid")


def drift_by_kind(rows: Rows) -> go.Figure:
    fig = go.Figure(go.Bar(x=[r[1] for r in rows], y=[str(r[0]) for r in rows], orientation="h",
                           marker_color=NEUTRAL_COLOUR, text=[r[1] for r in rows], textposition="auto"))  # fmt: skip
    _layout(fig, "Drift: where Whop's API and the webhooks disagree", "memberships", "kind")
    fig.update_yaxes(autorange="reversed", type="category")
    return _note_if_empty(fig, not rows, "no drift: Whop's API and the webhooks agree")


def pipeline_health(rows: Rows) -> go.Figure:
    started = [f"{r[0]:%Y-%m-%d %H:%M:%S}" for r in rows]
    top = max(5, max((r[3] for r in rows), default=0) * 1.15)
    colours = [STATUS_COLOURS["active"] if r[1] == "completed" else FAILED_COLOUR for r in rows]
    fig = go.Figure()
    fig.add_bar(x=started, y=[r[2] for r in rows], marker_color=colours, name="run duration (s)",
                customdata=[[r[1], r[4]] for r in rows],
                hovertemplate="%{x}<br>%{customdata[0]}, %{y} s, %{customdata[1]} events<extra></extra>")  # fmt: skip
    fig.add_scatter(x=started, y=[r[3] for r in rows], name="webhooks rejected", yaxis="y2", mode="lines+markers",
                    line={"color": CHURN_COLOUR, "width": 2})  # fmt: skip
    _layout(fig, "Pipeline runs: duration (green ok, red failed) and webhooks rejected", "run started (UTC)",
            "seconds", bargap=0.5,
            yaxis2={"title": {"text": "webhooks rejected"}, "overlaying": "y", "side": "right", "showgrid": False,
                    "range": [0, top], "dtick": max(1, math.ceil(top / 5)), "tickformat": ",d"})  # fmt: skip
    fig.update_xaxes(type="category" if len(started) < 3 else "date")
    return _note_if_empty(fig, not rows, "no runs recorded yet")
