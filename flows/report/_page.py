"""The report's one HTML page: Plotly's own script inlined once, each chart's card (heading, note, div and data)
after it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any

from plotly.offline import get_plotlyjs

from memberpulse.flows.report._charts import NO_COMPANY, STATUS_COLOURS, Chart
from memberpulse.flows.report._queries import AT_RISK_LISTED, CHURN_DAYS, Bounded, NewlyAtRisk, Overview

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; background: #f4f5f7;
       color: #1f2328; }
header { background: #1f2d3d; color: #fff; padding: 20px 32px; }
header h1 { margin: 0 0 4px; font-size: 24px; }
header p { margin: 0; color: #c9d1d9; font-size: 14px; }
main { max-width: 1440px; margin: 0 auto; padding: 20px 32px 40px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 12px; margin-bottom: 16px; }
.tile { background: #fff; border-radius: 8px; padding: 12px 16px; border-left: 6px solid #4a6fa5; }
.tile .value { font-size: 26px; font-weight: 600; }
.tile .label { font-size: 13px; color: #57606a; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(600px, 100%), 1fr)); gap: 16px; }
.card { background: #fff; border-radius: 8px; padding: 8px; box-shadow: 0 1px 2px rgba(0,0,0,.06); min-width: 0; }
.wide { grid-column: 1 / -1; }
.card h2 { font-size: 17px; margin: 8px 12px; }
.card p.note { font-size: 13px; color: #57606a; margin: 0 12px 8px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 6px 12px; border-bottom: 1px solid #eaecef; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
footer { color: #57606a; font-size: 12px; padding: 0 32px 24px; max-width: 1440px; margin: 0 auto; }
"""


# Plotly's "responsive" redraws a chart when the window resizes, not when its card does, and a card changes
# width while the page lays out: each chart is drawn as its script is parsed, before the cards after it exist
# and before the page grows a scrollbar. So every chart follows its own box.
_FIT_TO_CARD = """
window.memberpulseFit = function (id) {
  var gd = document.getElementById(id);
  new ResizeObserver(function () {
    var svg = gd.querySelector("svg.main-svg");
    if (svg && gd.offsetWidth && Math.abs(svg.getBoundingClientRect().width - gd.offsetWidth) >= 1) {
      Plotly.Plots.resize(gd).catch(function () {});  // not displayed (printing, a hidden tab): redrawn later
    }
  }).observe(gd);
};
"""


def chart_html(name: str, chart: Chart, *, wide: bool = False) -> str:
    div = chart.figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{name}",
                               config={"displayModeBar": False, "responsive": True},
                               post_script="memberpulseFit('{plot_id}');")  # fmt: skip
    note = f'<p class="note">{escape(chart.note)}</p>' if chart.note else ""
    return (
        f'<section class="card chart{" wide" if wide else ""}" data-chart="{name}">'
        f"<h2>{escape(chart.title)}</h2>{note}{div}</section>"
    )


def tiles_html(overview: Overview) -> str:
    tiles = [("members", overview.members, "#4a6fa5")]
    tiles += [(s.replace("_", " "), overview.by_status.get(s, 0), c) for s, c in STATUS_COLOURS.items()]
    tiles.append(("memberships drifting", overview.drift, "#8e44ad"))
    return (
        '<div class="tiles">'
        + "".join(
            f'<div class="tile" style="border-left-color:{colour}"><div class="value">{value:,}</div>'
            f'<div class="label">{escape(label)}</div></div>'
            for label, value, colour in tiles
        )
        + "</div>"
    )


_AT_RISK_HEAD = (
    ("member", False),
    ("email", False),
    ("score", True),
    ("last active", False),
    ("days since active", True),
)


def at_risk_html(newly: NewlyAtRisk) -> str:
    since = f" who were not at the run of {_when(newly.since)}" if newly.since else " (no earlier run to compare with)"
    listed = f", the {AT_RISK_LISTED} most engaged listed" if newly.total > AT_RISK_LISTED else ""
    head = "".join(f"<th{' class=num' if n else ''}>{h}</th>" for h, n in _AT_RISK_HEAD)
    body = (
        "".join(
            f"<tr><td>{_text(name)}</td><td>{_text(email)}</td><td class=num>{_text(score)}</td>"
            f"<td>{_when(last)}</td><td class=num>{_text(days)}</td></tr>"
            for name, email, score, last, days in newly.rows
        )
        or '<tr><td colspan="5">nobody newly at risk</td></tr>'
    )
    return (
        '<section class="card wide" data-table="newly-at-risk"><h2>Members newly at risk this week</h2>'
        f'<p class="note">{newly.total:,} members at risk now{since}{listed}.</p>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>"
    )


_INDEX_HEAD = (
    ("company", False),
    ("members", True),
    ("active", True),
    ("at risk", True),
    (f"churned ({CHURN_DAYS} days)", True),
    ("drifting", True),
)


def company_index_html(index: Bounded) -> str:
    """The index across companies: members, the share active and at risk, churn and drift per company, the
    largest first (each share of the company's own members)."""
    listed = f" The {len(index.rows)} largest of {index.total:,} are listed." if index.total > len(index.rows) else ""
    head = "".join(f"<th{' class=num' if n else ''}>{escape(h)}</th>" for h, n in _INDEX_HEAD)
    body = "".join(
        f"<tr><td>{_text(company if company is not None else NO_COMPANY)}</td><td class=num>{members:,}</td>"
        f"<td class=num>{_share(active, members)}</td><td class=num>{_share(at_risk, members)}</td>"
        f"<td class=num>{_share(churned, members)}</td><td class=num>{_share(drifting, members)}</td></tr>"
        for company, members, active, at_risk, _, churned, drifting in index.rows
    )
    return (
        '<section class="card wide" data-table="company-index"><h2>Companies</h2>'
        f'<p class="note">{index.total:,} companies, by members. Each share is of the company\'s own members: '
        f"active and at risk now, went invalid in the last {CHURN_DAYS} days (their webhooks), and where Whop's "
        f"API and the webhooks disagree.{listed}</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>"
    )


def _share(part: int, whole: int) -> str:
    return f"{part:,} ({100 * part / whole:.1f}%)" if whole else f"{part:,}"


def page_html(overview: Overview, sections: list[str], *, source: str, companies: Sequence[str] = ()) -> str:
    generated = f"snapshot of run {escape(overview.run_id[:8])} at {_when(overview.run_at)}"
    if companies:
        generated += f"; only {'company' if len(companies) == 1 else 'companies'} {escape(', '.join(companies))}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>memberpulse report — {_when(overview.run_at)}</title>
<style>{_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}
{_FIT_TO_CARD}</script>
</head><body>
<header><h1>memberpulse: member activity</h1><p>{generated}</p></header>
<main>{tiles_html(overview)}<div class="grid">{"".join(sections)}</div></main>
<footer>Built from {escape(source)}. Days and weeks are UTC. Query the same data with
<code>memberpulse sql</code>.</footer>
</body></html>
"""


def _when(value: datetime | None) -> str:
    return escape(f"{value:%Y-%m-%d %H:%M} UTC") if isinstance(value, datetime) else "—"


def _text(value: Any) -> str:
    return "—" if value is None else escape(str(value))
