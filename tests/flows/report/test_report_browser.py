"""The analysts' report of the demo's data, opened in a real headless Chromium with networking disabled: every
chart drawn, nothing fetched, and at common screen widths every chart inside its card with its legend; and the
report of three companies, with its index across them first, whole and scoped to some of them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from memberpulse.flows.report import CHART_NAMES, COMPANY_INDEX_CHART, REPORT_NAME, write_report
from tests.support.chromium import Chromium
from tests.support.companies_testkit import several_companies
from tests.support.report_layout import chart_geometry, layout_problems, wait_until_drawn

pytestmark = pytest.mark.slow
#: The demo plays a Whop app of three companies: its report opens with the index across them.
DEMO_CHARTS = (COMPANY_INDEX_CHART, *CHART_NAMES)


def _demo_env(data_dir: Path) -> dict[str, str]:
    env = {**os.environ, "MEMBERPULSE_DATA_DIR": str(data_dir), "COLUMNS": "120"}
    for name in ("SUPABASE_DB_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`memberpulse demo` in a fresh data dir: its reconcile run writes the report next to the snapshot."""
    data_dir = tmp_path_factory.mktemp("demo-data")
    done = subprocess.run([sys.executable, "-m", "memberpulse", "demo"], env=_demo_env(data_dir), capture_output=True,
                          text=True, timeout=240, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = data_dir / "demo" / "snapshots" / REPORT_NAME
    assert report.is_file(), done.stdout[-3000:]
    return report


@pytest.fixture(scope="module")
def days_report(demo_report: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's raw data and backfill, its state rebuilt by a run on each of the three days before today and
    one today (in a copy, so ``demo_report`` stays as the demo wrote it): several days of history and several
    runs, so the date axes have real ranges to label. (No run may be dated in the future.)"""
    data_dir = tmp_path_factory.mktemp("demo-days") / "demo"
    shutil.copytree(demo_report.parents[1], data_dir, symlinks=True)
    for built in (data_dir / "warehouse" / "reconcile", data_dir / "warehouse" / "published", data_dir / "snapshots"):
        shutil.rmtree(built, ignore_errors=True)
    now = datetime.now(UTC)
    for as_of in [(now - timedelta(days=days)).isoformat() for days in (3, 2, 1)] + [None]:
        at = ["--as-of", as_of] if as_of else []
        done = subprocess.run([sys.executable, "-m", "memberpulse", "run", *at], env=_demo_env(data_dir),
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return data_dir / "snapshots" / REPORT_NAME


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    with Chromium(tmp_path_factory.mktemp("profile")) as chromium:
        yield chromium


def test_demo_report_renders_every_chart_offline_without_console_errors(demo_report: Path, browser: Chromium,
                                                                        tmp_path: Path) -> None:  # fmt: skip
    page = browser.new_page()
    page.open(demo_report.resolve().as_uri())
    drawn = wait_until_drawn(page, len(DEMO_CHARTS))
    charts = chart_geometry(page)
    shot = tmp_path / "report.png"
    page.screenshot(shot, settled=lambda: wait_until_drawn(page, len(DEMO_CHARTS)))
    errors, requests = page.console_errors(), page.requests()
    at_risk_rows = page.evaluate("document.querySelectorAll('[data-table=newly-at-risk] tbody tr').length")

    keep = os.environ.get("MEMBERPULSE_REPORT_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
    print(f"screenshot: {shot}")
    assert drawn, json.dumps(charts)[:3000]
    assert [c["name"] for c in charts] == list(DEMO_CHARTS)
    assert errors == []
    assert [url for url in requests if not url.startswith(("file:", "data:", "about:", "blob:"))] == []
    assert shot.stat().st_size > 50_000  # a real full-page picture, not a blank one
    assert at_risk_rows >= 1


@pytest.mark.parametrize("width", [1000, 1400, 1920])
def test_every_chart_fits_its_card_with_a_legend_for_its_series(days_report: Path, browser: Chromium,
                                                                width: int) -> None:  # fmt: skip
    """Opened at this width from the start, as a reader's browser would: each chart must size itself to its card
    while the page lays out, not only after a window resize."""
    page = browser.new_page(width, 900)
    page.open(days_report.resolve().as_uri())

    drawn = wait_until_drawn(page, len(DEMO_CHARTS))
    problems = layout_problems(page)

    assert drawn, f"charts not drawn at their cards' size within the timeout; {problems}"
    assert problems == []
    assert page.console_errors() == []


@pytest.fixture(scope="module")
def companies_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The report two real runs over three companies wrote, and the same snapshot's report scoped to two of
    them and to one (``memberpulse report --company``)."""
    snapshots = several_companies(tmp_path_factory.mktemp("companies") / "data").settings.snapshots_dir
    return {
        "all": snapshots / REPORT_NAME,
        "two": write_report(snapshots, companies=("biz_beta", "biz_gamma")),
        "one": write_report(snapshots, companies=("biz_alpha",)),
    }


@pytest.mark.parametrize(("which", "width"), [("all", 1000), ("all", 1920), ("two", 1400), ("one", 1400)])
def test_the_company_index_comes_first_and_fits_like_every_chart(companies_reports: dict[str, Path],
                                                                 browser: Chromium, which: str,
                                                                 width: int) -> None:  # fmt: skip
    page = browser.new_page(width, 900)
    page.open(companies_reports[which].resolve().as_uri())
    index = [COMPANY_INDEX_CHART] if which != "one" else []
    drawn = wait_until_drawn(page, len(index) + len(CHART_NAMES))
    names = [chart["name"] for chart in chart_geometry(page)]
    problems = layout_problems(page)
    listed = page.evaluate(
        "[...document.querySelectorAll('[data-table=company-index] tbody tr td:first-child')].map(td => td.textContent)"
    )
    bars = page.evaluate(f"document.getElementById('chart-{COMPANY_INDEX_CHART}')?.data?.[0]?.y ?? []")

    assert drawn, f"charts not drawn within the timeout; {problems}"
    assert names == [*index, *CHART_NAMES] and problems == []
    assert page.console_errors() == []
    assert [url for url in page.requests() if not url.startswith(("file:", "data:", "about:", "blob:"))] == []
    expected = {"all": ["biz_alpha", "biz_beta", "biz_gamma"], "two": ["biz_beta", "biz_gamma"], "one": []}[which]
    assert listed == expected and bars == expected  # by members, largest first; table and chart alike
