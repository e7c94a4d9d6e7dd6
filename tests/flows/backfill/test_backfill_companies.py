"""Many companies in one backfill, against the Whop API simulator on 127.0.0.1 (the real whop-sdk): an app's key
and a company's own, companies listed and companies seen in landed webhooks, one company uninstalled (403), a
5xx storm and a runaway cursor in one company while the others finish, the round that retries only the failed
company, and the drift each company is judged by."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from memberpulse.cli.backfill import run_once
from memberpulse.flows.backfill import backfill, load_round
from memberpulse.flows.reconcile import reconcile
from memberpulse.flows.whop import latest_snapshot, latest_snapshots
from memberpulse.landing import mock_events as mock
from memberpulse.settings import Settings
from tests.support.reconcile_testkit import append_raw, raw_record
from tests.support.whop_testkit import C_KEY, PER_COMPANY, A, B, C, Companies, make_settings

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def settings_for(root: Path, companies: Companies, **overrides: object) -> Settings:
    """The app's key, A listed, C with its own key; B only as landed webhooks name it."""
    values: dict[str, object] = {
        "WHOP_COMPANY_ID": None, "WHOP_COMPANY_IDS": A, "WHOP_COMPANY_API_KEYS": f"{C}={C_KEY}",
        "MEMBERPULSE_WHOP_PAGE_SIZE": 25, **overrides,
    }  # fmt: skip
    return make_settings(root / "data", companies.base_url, **values)


def land_webhooks_of(settings: Settings, companies: Companies, company: str, *, at: datetime, extra: str = "") -> None:
    """Signature-verified webhooks (as the landing stores them) for five of ``company``'s memberships, and one
    for a membership Whop does not list (``extra``), joined at ``at``."""
    ids = [m.id for m in companies.populations[company].memberships[:5]] + ([extra] if extra else [])
    lines = [
        raw_record(mock.activated(mock.MockMember(membership_id=i, user_id=f"user_{i}", company_id=company), at=at),
                   received_at=at)
        for i in ids
    ]  # fmt: skip
    append_raw(settings.data_dir, lines, writer=f"landing-{company}-{at:%H%M%S%f}", day=f"{at:%Y-%m-%d}")


def drift_of(settings: Settings, company: str) -> dict[str, str]:
    with duckdb.connect(str(settings.snapshots_dir / "latest.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT membership_id, reason FROM reconciliation_drift WHERE company_id = ?", [company]
        ).fetchall()
    return dict(rows)


def test_three_companies_one_uninstalled_the_others_are_written_and_each_judged_by_its_own_fetch(
    companies: Companies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(tmp_path, companies)
    land_webhooks_of(settings, companies, B, at=datetime.now(UTC) - timedelta(hours=1))
    reconcile(settings, as_of=None, full_refresh=False)  # the member state now names B

    assert run_once(settings) == 0
    assert {s.company_id for s in latest_snapshots(settings.warehouse_dir)} == {A, B, C}
    b_first = latest_snapshot(settings.warehouse_dir, B)

    companies.state.uninstall(B)
    land_webhooks_of(settings, companies, B, at=datetime.now(UTC), extra="mem_bravo_joined_since")
    capsys.readouterr()
    assert run_once(settings) == 2  # B is a company to fix (or to leave out); A and C are written
    err = capsys.readouterr().err
    assert B in err and "403" in err and f"-{B}" in err and "the next backfill fetches only them" in err
    assert A not in err and C not in err and C_KEY not in err
    latest = {s.company_id: s for s in latest_snapshots(settings.warehouse_dir)}
    assert latest[B] == b_first and latest[A].fetched_at > b_first.fetched_at < latest[C].fetched_at
    assert {c: s.counts["memberships"] for c, s in latest.items()} == {A: PER_COMPANY, B: PER_COMPANY, C: PER_COMPANY}

    reconcile(settings, as_of=None, full_refresh=False)
    # B is judged by its own last fetch: the membership that joined after it is no drift, however much later
    # A's and C's fetches were; A's and C's members, never seen in a webhook, are API-only.
    assert "mem_bravo_joined_since" not in drift_of(settings, B)
    assert set(drift_of(settings, A).values()) == {"api_only"} and len(drift_of(settings, A)) == PER_COMPANY
    assert list(drift_of(settings, B).values()).count("api_only") == PER_COMPANY - 5


def test_the_next_backfill_fetches_only_the_failed_company_and_then_a_new_round_all(
    companies: Companies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(tmp_path, companies, WHOP_COMPANY_IDS=f"{A},{B}")
    companies.state.uninstall(B)
    failed = backfill(settings)
    assert set(failed.written) == {A, C} and set(failed.failures) == {B} and failed.failure_kind == "configuration"
    assert set(load_round(settings.warehouse_dir).failed) == {B}

    companies.state.uninstalled.clear()  # B installs the app again
    before = {c: companies.served(c) for c in (A, B, C)}
    assert run_once(settings) == 0
    assert {c: companies.served(c) - before[c] for c in (A, C)} == {A: 0, C: 0}  # left alone this round
    assert companies.served(B) > before[B]
    out = capsys.readouterr().out
    assert "2 other company(ies) were fetched in this round" in out and "--all" in out
    assert load_round(settings.warehouse_dir).failed == {}

    before = {c: companies.served(c) for c in (A, B, C)}
    again = backfill(settings)  # nothing failed: a new round, every company
    assert set(again.written) == {A, B, C} and all(companies.served(c) > before[c] for c in (A, B, C))


def test_a_retry_round_ends_after_the_retry_window_and_all_refetches_at_once(
    companies: Companies, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, companies, WHOP_COMPANY_IDS=f"{A},{B}", MEMBERPULSE_BACKFILL_RETRY_HOURS=0)
    companies.state.uninstall(B)
    assert set(backfill(settings).failures) == {B}
    assert set(backfill(settings).written) == {A, C}  # past the (zero-hour) window: a new round, every company
    patient = settings.model_copy(update={"backfill_retry_hours": 12.0})
    assert set(backfill(patient, all_companies=True).written) == {A, C}


def test_a_5xx_storm_and_a_runaway_cursor_end_only_their_company(companies: Companies, tmp_path: Path) -> None:
    """B answers 502 forever (each page retried with backoff until the client gives up); C's members cursor never
    ends. A is written long before B gives up: a failing company holds up no other."""
    settings = settings_for(
        tmp_path, companies, WHOP_COMPANY_IDS=f"{A},{B}", MEMBERPULSE_WHOP_MAX_ATTEMPTS=4,
        MEMBERPULSE_WHOP_BACKOFF_BASE_SECONDS=1.0, MEMBERPULSE_WHOP_MAX_PAGES=30,
    )  # fmt: skip
    companies.faults.server_error(None, status=502, company=B)
    companies.faults.endless_cursor("members", company=C)
    started = time.monotonic()
    result = backfill(settings)
    took = time.monotonic() - started

    assert set(result.written) == {A} and set(result.failures) == {B, C}
    assert "last status 502" in result.failures[B].reason and "after 30 pages" in result.failures[C].reason
    assert result.failure_kind == "transient"  # both may heal: run it again later (exit 3)
    assert result.written[A].seconds < took / 2  # B's backoff (1 + 2 + 4 s and more) was not A's to wait out
    assert latest_snapshot(settings.warehouse_dir, B) is None and latest_snapshot(settings.warehouse_dir, C) is None
