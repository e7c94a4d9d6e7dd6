"""Date x axes whose tick labels take one line, never repeat, and sit on the days or Mondays the bars stand for.

Plotly's own date labels add a second line (the year, or the date under a time of day); with a margin sized
for one line, that is how a lone "2026" came to be all a reader saw of a tick.
"""

from __future__ import annotations

import math
from datetime import date

import plotly.graph_objects as go

DAY_MS = 86_400_000
MAX_LABELS = 6  # ISO dates side by side in a half-width card, not turned on their side
# Up to this many days or weeks, ticks are placed here (Plotly would put some between the bars, at noon or on
# a Sunday); past it, Plotly's spacing is coarser than one step (at most 9 ticks) and its labels are right.
FIXED_UP_TO = 20
MONDAY = "2000-01-03"  # where weekly ticks start counting, so they fall on Mondays like the weeks (UTC)

# As precise as the tick spacing needs, one line each.
TICK_FORMATS = (
    {"dtickrange": [None, 60_000], "value": "%b %-d %H:%M:%S"},
    {"dtickrange": [60_000, DAY_MS], "value": "%b %-d %H:%M"},
    {"dtickrange": [DAY_MS, 15 * DAY_MS], "value": "%Y-%m-%d"},  # Plotly's day spacings stop at 14 days
    {"dtickrange": ["M1", "M12"], "value": "%b %Y"},
    {"dtickrange": ["M12", None], "value": "%Y"},
)


def date_axis(fig: go.Figure, first: date | None = None, last: date | None = None, *, step_days: int = 0) -> None:
    """Make the x axis a date axis. ``step_days`` (1: days, 7: weeks) with the first and last bar's date: a tick
    every step or every few steps, at most ``MAX_LABELS``; 0: times of day, spaced by Plotly."""
    fixed: dict[str, object] = {}
    if step_days and first is not None and last is not None:
        steps = (last - first).days // step_days + 1
        if steps <= FIXED_UP_TO:
            fixed = {"dtick": math.ceil(steps / MAX_LABELS) * step_days * DAY_MS, "tick0": MONDAY}
    hover = "%Y-%m-%d" if step_days else "%Y-%m-%d %H:%M:%S"
    fig.update_xaxes(type="date", tickformatstops=list(TICK_FORMATS), hoverformat=hover, **fixed)
