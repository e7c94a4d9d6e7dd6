"""The analysts' report of the demo's data, opened in a real headless Chromium with networking disabled."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memberpulse.flows.report import CHART_NAMES, REPORT_NAME
from tests.support.chromium import Chromium, Page

pytestmark = pytest.mark.slow

# Per chart: Plotly drew its SVG, and the plot area holds drawn marks (bars, cells, lines), not just axes.
CHARTS_DRAWN = """
JSON.stringify([...document.querySelectorAll('section[data-chart]')].map(s => ({
  name: s.dataset.chart,
  svg: s.querySelectorAll('svg.main-svg').length,
  marks: [...s.querySelectorAll('svg.main-svg .overplot path, svg.main-svg .overplot image')].filter(e =>
    e.tagName === 'image' ? !!e.getAttribute('href') : !['', 'M0,0Z'].includes(e.getAttribute('d') || '')).length,
})))
"""


def _wait_for_charts(page: Page, timeout: float = 30) -> list[dict[str, object]]:
    import json

    deadline = time.monotonic() + timeout
    while True:
        charts = json.loads(page.evaluate(CHARTS_DRAWN))
        if (len(charts) == len(CHART_NAMES) and all(c["marks"] for c in charts)) or time.monotonic() > deadline:
            return charts
        time.sleep(0.2)


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`memberpulse demo` in a fresh data dir: its reconcile run writes the report next to the snapshot."""
    data_dir = tmp_path_factory.mktemp("demo-data")
    env = {**os.environ, "MEMBERPULSE_DATA_DIR": str(data_dir), "COLUMNS": "120"}
    for name in ("SUPABASE_DB_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "memberpulse", "demo"], env=env, capture_output=True, text=True,
                          timeout=240, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = data_dir / "demo" / "snapshots" / REPORT_NAME
    assert report.is_file(), done.stdout[-3000:]
    return report


def test_demo_report_renders_every_chart_offline_without_console_errors(demo_report: Path, tmp_path: Path) -> None:
    with Chromium(tmp_path / "profile") as browser:
        page = browser.new_page()
        page.open(demo_report.resolve().as_uri())
        charts = _wait_for_charts(page)
        shot = tmp_path / "report.png"
        page.screenshot(shot)
        errors, requests = page.console_errors(), page.requests()
        at_risk_rows = page.evaluate("document.querySelectorAll('[data-table=newly-at-risk] tbody tr').length")

    keep = os.environ.get("MEMBERPULSE_REPORT_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
    print(f"screenshot: {shot}")
    assert [c["name"] for c in charts] == list(CHART_NAMES)
    for chart in charts:
        assert chart["svg"] >= 1 and chart["marks"] > 0, chart
    assert errors == []
    assert [url for url in requests if not url.startswith(("file:", "data:", "about:", "blob:"))] == []
    assert shot.stat().st_size > 50_000  # a real full-page picture, not a blank one
    assert at_risk_rows >= 1
