"""Recovery over many companies' webhooks, against the Whop API simulator on 127.0.0.1 (the real whop-sdk): each
company's webhook found by the public URL with that company's key and read side by side, an uninstalled company
failing alone and read again later, and an app's webhook (named by its id) carrying every installed company."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memberpulse.cli.recover import run_once
from memberpulse.flows.recover import RecoveryStore, recover
from memberpulse.landing import mock_events as mock
from memberpulse.settings import Settings
from memberpulse.whop_simulator import SimWebhook
from tests.support.landing_testkit import read_records
from tests.support.net import free_port
from tests.support.whop_testkit import C_KEY, A, B, C, Companies, make_settings, serve_companies

pytestmark = pytest.mark.slow

LANDING = f"http://127.0.0.1:{free_port()}/api/webhooks/whop"  # nothing listens: every delivery fails


def lost_events(companies: Companies, hook: SimWebhook, company: str, count: int = 3) -> list[str]:
    """``count`` joins of ``company``'s members that Whop sent through ``hook`` while the landing was down."""
    sent = []
    for membership in companies.populations[company].memberships[:count]:
        who = mock.MockMember(membership_id=membership.id, user_id=membership.user.id, company_id=company)
        hub = companies.state.webhooks
        assert hub is not None
        attempt = hub.send(hook.id, mock.activated(who, at=membership.created_at))
        assert not attempt.success
        sent.append(attempt.webhook_id)
    return sent


def recovered_ids(settings: Settings) -> set[str]:
    return {r["webhook_id"] for r in read_records(settings.landing_dir) if r["scheme"] == "delivery_log"}


def settings_for(root: Path, companies: Companies, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "WHOP_COMPANY_ID": None, "WHOP_COMPANY_IDS": f"{A},{B}", "WHOP_COMPANY_API_KEYS": f"{C}={C_KEY}",
        "MEMBERPULSE_PUBLIC_WEBHOOK_URL": LANDING, **overrides,
    }  # fmt: skip
    return make_settings(root / "data", companies.base_url, **values)


def test_each_companys_webhook_is_read_and_an_uninstalled_company_fails_alone_then_is_read_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve_companies() as companies:
        hub = companies.state.webhooks
        assert hub is not None
        hooks = {c: hub.register(LANDING, owner=c) for c in (A, B, C)}
        lost = {c: lost_events(companies, hooks[c], c) for c in (A, B, C)}
        settings = settings_for(tmp_path, companies)
        companies.state.uninstall(B)

        assert run_once(settings, since=None, replay=False) == 2  # B's webhooks could not be listed
        err = capsys.readouterr().err
        assert B in err and "403" in err and "read again by the next recovery" in err
        assert recovered_ids(settings) == {*lost[A], *lost[C]}
        state = RecoveryStore(settings.warehouse_dir, settings.landing_dir, settings.quarantine_dir).load_state()
        assert set(state.hooks) == {hooks[A].id, hooks[C].id}
        served = [r.credential for r in companies.state.served("deliveries")]
        assert sorted(served) == ["app", C]  # each webhook read with the key of the company it was found for

        companies.state.uninstalled.clear()
        again = recover(settings)
    assert again.failures == {} and again.recovered == len(lost[B])
    assert recovered_ids(settings) == {*lost[A], *lost[B], *lost[C]}


def test_an_app_webhook_named_by_its_id_carries_every_installed_company_but_those_left_out(tmp_path: Path) -> None:
    with serve_companies() as companies:
        hub = companies.state.webhooks
        assert hub is not None
        app_hook = hub.register(LANDING, owner="app_memberpulse")
        kept = [*lost_events(companies, app_hook, A), *lost_events(companies, app_hook, C)]
        left_out = lost_events(companies, app_hook, B)
        settings = settings_for(
            tmp_path, companies, WHOP_WEBHOOK_ID=app_hook.id, WHOP_COMPANY_IDS=f"{A},-{B}",
            WHOP_COMPANY_API_KEYS=None, MEMBERPULSE_PUBLIC_WEBHOOK_URL=None,
        )  # fmt: skip
        result = recover(settings)
    assert result.hooks == (app_hook.id,) and result.other_company == len(left_out)
    assert recovered_ids(settings) == set(kept)  # C is no listed company: an app's webhook carries it anyway
