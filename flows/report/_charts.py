"""The report's charts as Plotly figures, built from the small query results in ``_queries``.

Each figure takes its card's width (no width of its own) and lets Plotly grow its margins for whatever it draws
outside the plot area (tick labels, axis titles, the legend, a colour bar), so nothing is cut at any width. A
chart's title and note are the card's HTML (``Chart``): a Plotly title does not wrap, it is clipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any

import plotly.graph_objects as go

from memberpulse.flows.publish import REFUSED_LABEL, REJECTS_LABEL
from memberpulse.flows.report._date_axis import date_axis
from memberpulse.flows.report._queries import Bounded, Rows

STATUS_COLOURS = {"active": "#2e9d5b", "at_risk": "#f0a202", "inactive": "#9aa0a6"}
STATUS_LABELS = {"active": "active", "at_risk": "at risk", "inactive": "inactive"}
RUN_COLOURS = {"completed": "#2e9d5b", "failed": "#c0392b", "running": "#9aa0a6"}
CHURN_COLOUR = "#c0392b"
REFUSED_COLOUR = "#8e44ad"
NEUTRAL_COLOUR = "#4a6fa5"
HEIGHT = 360
COHORT_ROW_PX = 16
COMPANY_ROW_PX = 28
COMPANIES_DRAWN = 20  # bars in the index chart: the largest companies; the table below it lists more
NO_COMPANY = "(no company named)"


@dataclass(frozen=True)
class Chart:
    """One card of the report: its heading, a note when the figure needs one to be read right, the figure."""

    title: str
    figure: go.Figure
    note: str | None = None


def _layout(fig: go.Figure, x_title: str, y_title: str, *, height: int = HEIGHT, **extra: Any) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        autosize=True,
        height=height,
        # Small on purpose: automargin and the legend add what they need, and no more.
        margin={"l": 16, "r": 16, "t": 24, "b": 16, "autoexpand": True},
        font={"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13},
        # Above the plot, from its left edge: a horizontal legend wraps onto more rows in a narrow card.
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom", "traceorder": "normal"},
        xaxis={"title": {"text": x_title}, "automargin": True},
        yaxis={"title": {"text": y_title}, "automargin": True},
        **extra,
    )
    return fig


def _note_if_empty(fig: go.Figure, empty: bool, text: str) -> go.Figure:
    if empty:
        fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font={"size": 14, "color": "#666"})  # fmt: skip
    return fig


def _shown(what: str, shown: int, total: int) -> str | None:
    """The note a bounded chart carries, so a reader never takes the newest part for the whole."""
    return f"Showing the last {shown:,} of {total:,} {what}." if shown < total else None


def status_over_time(rows: Rows) -> Chart:
    days: list[date] = [r[0] for r in rows]
    fig = go.Figure()
    for index, status in enumerate(("active", "at_risk", "inactive"), start=1):
        fig.add_bar(x=[str(d) for d in days], y=[r[index] for r in rows], name=STATUS_LABELS[status],
                    marker_color=STATUS_COLOURS[status])  # fmt: skip
    _layout(fig, "day (UTC, the day's last run)", "members", barmode="stack", bargap=0.4)
    if len(days) < 3:  # a date axis spreads one or two bars over an invented range
        fig.update_xaxes(type="category")
    else:
        date_axis(fig, days[0], days[-1], step_days=1)
    return Chart("Members by status, per day", _note_if_empty(fig, not rows, "no runs in the history yet"))


def score_distribution(rows: Rows) -> Chart:
    fig = go.Figure()
    for status in ("active", "at_risk", "inactive"):
        mine = [r for r in rows if r[0] == status]
        fig.add_bar(x=[r[1] + 2.5 for r in mine], y=[r[2] for r in mine], width=5, name=STATUS_LABELS[status],
                    marker_color=STATUS_COLOURS[status], marker_line={"width": 0.5, "color": "white"},
                    hovertemplate="score %{x:.0f} ±2.5: %{y} members<extra></extra>")  # fmt: skip
    _layout(fig, "engagement score (0–100, buckets of 5)", "members", barmode="stack")
    fig.update_xaxes(range=[0, 105], dtick=10)
    return Chart("Engagement score distribution", _note_if_empty(fig, not rows, "no scored members yet"))


def cohort_heatmap(cohorts: Bounded) -> Chart:
    rows = cohorts.rows
    weeks_joined = sorted({str(r[0]) for r in rows})
    weeks = sorted({int(r[1]) for r in rows})
    cell = {(str(r[0]), int(r[1])): r for r in rows}
    z = [[(100 * cell[c, w][2]) if (c, w) in cell else None for w in weeks] for c in weeks_joined]
    text = [[f"{cell[c, w][3]} of {cell[c, w][4]}" if (c, w) in cell else "" for w in weeks] for c in weeks_joined]
    fig = go.Figure(
        go.Heatmap(
            x=weeks, y=weeks_joined, z=z, text=text, zmin=0, zmax=100, colorscale="Greens", xgap=1, ygap=1,
            colorbar={"title": {"text": "% retained"}, "ticksuffix": "%"},
            hovertemplate="joined week of %{y}<br>week %{x}: %{z:.0f}% retained (%{text})<extra></extra>",
        )
    )  # fmt: skip
    _layout(fig, "weeks since joining", "cohort (week joined)",
            height=max(HEIGHT, 120 + COHORT_ROW_PX * len(weeks_joined)))  # fmt: skip
    fig.update_yaxes(autorange="reversed", type="category")
    return Chart(
        "Weekly join cohorts: share still members, by weeks since joining",
        _note_if_empty(fig, not rows, "no members with a join date yet"),
        _shown("weekly cohorts", len(weeks_joined), cohorts.total),
    )


def churn_per_week(rows: Rows) -> Chart:
    weeks: list[date] = [r[0] for r in rows]
    fig = go.Figure(go.Bar(x=[str(w) for w in weeks], y=[r[1] for r in rows], marker_color=CHURN_COLOUR,
                           name="went invalid", hovertemplate="week of %{x}: %{y} members<extra></extra>"))  # fmt: skip
    _layout(fig, "week (Monday, UTC)", "members")
    if weeks:
        date_axis(fig, weeks[0], weeks[-1], step_days=7)
    return Chart("Churn: members who went invalid, per week",
                 _note_if_empty(fig, not rows, "no member has gone invalid"))  # fmt: skip


def drift_by_kind(rows: Rows) -> Chart:
    total = sum(int(r[1]) for r in rows)
    fig = go.Figure(go.Bar(x=[r[1] for r in rows], y=[str(r[0]) for r in rows], orientation="h",
                           marker_color=NEUTRAL_COLOUR, text=[r[1] for r in rows], textposition="auto",
                           hovertemplate="%{y}: %{x} memberships<extra></extra>"))  # fmt: skip
    _layout(fig, "memberships", "kinds of disagreement")
    fig.update_yaxes(autorange="reversed", type="category")
    return Chart(
        f"Drift: {total:,} memberships where Whop's API and the webhooks disagree",
        _note_if_empty(fig, not rows, "no drift: Whop's API and the webhooks agree"),
        "Each membership is counted once, under all its kinds together (validity + status: both)." if rows else None,
    )


def pipeline_health(runs: Bounded) -> Chart:
    """Each run's duration, and the two counts its summary gives, named as the summary names them."""
    rows = runs.rows
    x = [f"{r[0]:%Y-%m-%d %H:%M:%S}" for r in rows]  # UTC as written: Plotly would drop a datetime's offset
    fig = go.Figure()
    for status, colour in RUN_COLOURS.items():
        mine = [i for i, r in enumerate(rows) if r[1] == status]
        if mine:
            fig.add_bar(x=[x[i] for i in mine], y=[rows[i][2] for i in mine], marker_color=colour,
                        name=f"run duration (s), {status}", customdata=[rows[i][5] for i in mine],
                        hovertemplate="%{x}<br>%{y} s, %{customdata} events<extra></extra>")  # fmt: skip
    few = len(rows) < 3  # one or two runs: their counts written beside the markers, where a line cannot show them
    for label, index, colour in ((REJECTS_LABEL, 3, CHURN_COLOUR), (REFUSED_LABEL, 4, REFUSED_COLOUR)):
        fig.add_scatter(x=x, y=[r[index] for r in rows], name=label, yaxis="y2",
                        mode="lines+markers+text" if few else "lines+markers", texttemplate="%{y}",
                        textposition="middle right", textfont={"color": colour},
                        line={"color": colour, "width": 2}, marker={"size": 8, "line": {"width": 1, "color": "white"}},
                        hovertemplate=f"%{{x}}<br>{label}: %{{y}}<extra></extra>")  # fmt: skip
    top = max(5, max((n for r in rows for n in (r[3], r[4]) if n is not None), default=0) * 1.15)
    counts_axis = {"title": {"text": "per run"}, "overlaying": "y", "side": "right", "showgrid": False,
                   "automargin": True, "range": [0, top], "dtick": max(1, math.ceil(top / 5)),
                   "tickformat": ",d"}  # fmt: skip
    _layout(fig, "run started (UTC)", "seconds", bargap=0.5, barmode="overlay", yaxis2=counts_axis)
    fig.update_traces(opacity=0.7, selector={"type": "bar"})  # the counts' markers stay visible over a bar
    if few:  # a date axis would invent a range around one or two runs; their start times read better
        fig.update_xaxes(type="category")
        fig.update_layout(bargap=0.8)  # one or two bars would otherwise fill the card
    else:
        date_axis(fig)
    return Chart(
        "Pipeline runs: duration, rejects and refusals",
        _note_if_empty(fig, not rows, "no runs recorded yet"),
        _shown("runs", len(rows), runs.total),
    )


def company_index(index: Bounded) -> Chart:
    """Members by status per company, the largest companies first (a bar each, stacked like the status charts),
    so a company whose share of active members stands out is seen at once."""
    rows = index.rows[:COMPANIES_DRAWN]
    names = [str(r[0]) if r[0] is not None else NO_COMPANY for r in rows]
    fig = go.Figure()
    for offset, status in enumerate(("active", "at_risk", "inactive"), start=2):
        label = STATUS_LABELS[status]
        fig.add_bar(y=names, x=[r[offset] for r in rows], orientation="h", name=label,
                    marker_color=STATUS_COLOURS[status], customdata=[r[1] for r in rows],
                    hovertemplate=f"%{{y}}: %{{x}} {label} of %{{customdata}}<extra></extra>")  # fmt: skip
    _layout(fig, "members", "company", barmode="stack", height=max(HEIGHT, 140 + COMPANY_ROW_PX * len(rows)))
    fig.update_yaxes(autorange="reversed", type="category")
    more = f"Showing the {len(rows)} largest of {index.total:,} companies." if len(rows) < index.total else None
    return Chart("Companies: members by status", _note_if_empty(fig, not rows, "no members yet"), more)
