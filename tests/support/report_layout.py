"""What a reader sees of the report's charts, measured in the browser: where Plotly drew each chart, its texts
and its legend, against the card that holds it.

Waiting is done in the page (one DevTools call whose promise resolves when the charts are drawn at their
containers' size, or at a timeout), so a test polls a condition instead of sleeping.
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.chromium import Page

TOLERANCE_PX = 1  # sub-pixel rounding between a card's box and what Plotly drew at its width
DRAW_TIMEOUT_MS = 30_000  # generous: two cores shared with other work; a drawn report takes well under a second

# Each chart's graph div (Plotly's `gd`) has drawn marks (bars, cells, lines: not just axes) and its main SVG is
# the size of the div, i.e. Plotly has drawn it for the size its container has now.
_DRAWN = """
const drawn = (expected) => {
  const charts = [...document.querySelectorAll('section[data-chart] .plotly-graph-div')];
  return document.readyState === 'complete' && charts.length === expected && charts.every(gd => {
    const svg = gd.querySelector('svg.main-svg');
    if (!svg) return false;
    const marks = [...gd.querySelectorAll('svg.main-svg .overplot path, svg.main-svg .overplot image')].filter(e =>
      e.tagName === 'image' ? !!e.getAttribute('href') : !['', 'M0,0Z'].includes(e.getAttribute('d') || ''));
    const s = svg.getBoundingClientRect(), d = gd.getBoundingClientRect();
    return marks.length > 0 && Math.abs(s.width - d.width) < 1 && Math.abs(s.height - d.height) < 1;
  });
};
"""

_WAIT = (
    "(async () => {"
    + _DRAWN
    + """
  const deadline = performance.now() + %(timeout)d;
  while (!drawn(%(expected)d)) {
    if (performance.now() > deadline) return false;
    await new Promise(resolve => setTimeout(resolve, 25));  // the poll's interval, not a wait for an outcome
  }
  return true;
})()
"""
)

# Per chart: the card's box, the boxes of Plotly's SVG layers and plot areas, how many marks it drew (bars,
# cells, lines: not just axes), every non-empty text (ticks, axis titles, legend, annotations), the legend's
# entries, and the names of the series that have points.
_GEOMETRY = """
JSON.stringify([...document.querySelectorAll('section[data-chart]')].map(card => {
  const box = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
  const gd = card.querySelector('.plotly-graph-div');
  return {
    name: card.dataset.chart,
    card: box(card),
    marks: [...card.querySelectorAll('svg.main-svg .overplot path, svg.main-svg .overplot image')].filter(e =>
      e.tagName === 'image' ? !!e.getAttribute('href') : !['', 'M0,0Z'].includes(e.getAttribute('d') || '')).length,
    svgs: [...card.querySelectorAll('svg.main-svg')].map(box),
    plots: [...card.querySelectorAll('.draglayer .nsewdrag')].map(box),
    texts: [...card.querySelectorAll('svg.main-svg text')]
      .filter(t => t.textContent.trim() && t.getBoundingClientRect().width > 0)
      .map(t => ({text: t.textContent.trim(), box: box(t)})),
    legend: [...card.querySelectorAll('.legend .traces')]
      .map(t => ({text: (t.querySelector('.legendtext') || t).textContent.trim(), box: box(t)})),
    series: (gd && gd.data || []).filter(t => (t.x || []).length || (t.y || []).length).map(t => t.name || ''),
  };
}))
"""


def wait_until_drawn(page: Page, expected: int, timeout_ms: int = DRAW_TIMEOUT_MS) -> bool:
    """True once every chart is drawn at its container's size; False at the timeout."""
    return bool(page.evaluate(_WAIT % {"timeout": timeout_ms, "expected": expected}, await_promise=True))


def chart_geometry(page: Page) -> list[dict[str, Any]]:
    return list(json.loads(page.evaluate(_GEOMETRY)))


def _inside(inner: list[float], outer: list[float]) -> bool:
    left, top, right, bottom = inner
    return (left >= outer[0] - TOLERANCE_PX and top >= outer[1] - TOLERANCE_PX
            and right <= outer[2] + TOLERANCE_PX and bottom <= outer[3] + TOLERANCE_PX)  # fmt: skip


def _visible(box: list[float]) -> bool:
    return box[2] - box[0] > 0 and box[3] - box[1] > 0


def _unique(boxes: list[list[float]]) -> list[list[float]]:
    """Plotly stacks several SVG layers of one size; one problem line per distinct box."""
    return [list(b) for b in dict.fromkeys(tuple(b) for b in boxes)]


def layout_problems(page: Page) -> list[str]:
    """Everything a reader would find cut off, spilling out of its card, or unexplained: empty when none."""
    problems = []
    for chart in chart_geometry(page):
        name, card = chart["name"], chart["card"]
        if not chart["svgs"] or not chart["plots"] or not chart["marks"]:
            problems.append(f"{name}: nothing drawn")
            continue
        drawn = chart["svgs"][0]
        problems += [f"{name}: drawing {svg} spills out of its card {card}" for svg in _unique(chart["svgs"])
                     if not _inside(svg, card)]  # fmt: skip
        problems += [f"{name}: plot area {plot} is not inside its card {card}" for plot in chart["plots"]
                     if not (_visible(plot) and _inside(plot, card))]  # fmt: skip
        # A text outside the drawing is clipped by it (a cut axis title or tick label) or spills over the card.
        problems += [f"{name}: text {t['text']!r} at {t['box']} is cut off or outside its card" for t in chart["texts"]
                     if not (_inside(t["box"], drawn) and _inside(t["box"], card))]  # fmt: skip
        if len(chart["series"]) > 1:
            shown = {e["text"] for e in chart["legend"] if _visible(e["box"]) and _inside(e["box"], drawn)
                     and _inside(e["box"], card)}  # fmt: skip
            missing = [s for s in chart["series"] if s not in shown]
            if missing:
                problems.append(f"{name}: series {missing} have no visible legend entry inside the card")
    return problems
