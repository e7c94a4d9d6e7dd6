"""``send-test``: the guide's ``pnpm test:webhook`` against a real server."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from memberpulse.cli.send_test import send_test
from memberpulse.contracts.events import SUPPORTED_EVENTS
from memberpulse.errors import ConfigError, InvalidInput
from tests.support.landing_testkit import SECRET, free_port, make_settings, read_records, running_server


@pytest.mark.slow
def test_all_sends_every_mock_event_and_prints_the_guides_sections(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    with running_server(settings) as server:
        out = io.StringIO()
        assert send_test("all", url=server.url, settings=settings, out=out) == 0
    text = out.getvalue()
    for section in (
        "🧪 Testing Webhook: membership.went_valid",
        "📦 Payload:",
        "🔐 Signature: v1,",
        "📍 Sending to: " + server.url,
        "📊 Response Status: 200",
        "📋 Response Body:",
        "✅ Webhook processed successfully!",
    ):
        assert section in text
    assert text.count("✅") == len(SUPPORTED_EVENTS)
    assert SECRET not in text
    records = read_records(settings.landing_dir)
    assert sorted(r["event_type"] for r in records) == sorted(SUPPORTED_EVENTS)
    bodies = {r["event_type"]: json.loads(r["body"]) for r in records}
    assert bodies["membership.went_valid"]["data"].keys() >= {
        "id",
        "user_id",
        "company_id",
        "email",
        "username",
        "created_at",
    }
    assert bodies["membership.accessed"]["data"]["accessed_at"]
    assert bodies["membership.went_invalid"]["data"]["expired_at"]
    activated = bodies["membership.activated"]
    assert activated["api_version"] == "v1" and activated["type"] == "membership.activated"
    assert activated["data"]["user"]["id"] and activated["timestamp"]
    assert bodies["membership.deactivated"]["data"]["status"] == "canceled"


@pytest.mark.slow
def test_a_secret_mismatch_fails_with_a_non_zero_exit(tmp_path: Path) -> None:
    with running_server(make_settings(tmp_path / "data")) as server:
        out = io.StringIO()
        client_settings = make_settings(tmp_path / "data", WHOP_WEBHOOK_SECRET="ws_someone_elses")
        assert send_test("membership.accessed", url=server.url, settings=client_settings, out=out) == 1
    assert "📊 Response Status: 403" in out.getvalue() and "❌" in out.getvalue()


def test_an_unreachable_endpoint_fails_clearly(tmp_path: Path) -> None:
    out = io.StringIO()
    url = f"http://127.0.0.1:{free_port()}/api/webhooks/whop"
    assert send_test("membership.went_valid", url=url, settings=make_settings(tmp_path), out=out) == 1
    assert f"❌ Could not reach {url}" in out.getvalue() and "memberpulse serve" in out.getvalue()


def test_a_refused_https_connection_is_still_could_not_reach(tmp_path: Path) -> None:
    out = io.StringIO()  # no TLS was ever spoken: this is not a certificate problem
    url = f"https://127.0.0.1:{free_port()}/api/webhooks/whop"
    assert send_test("membership.went_valid", url=url, settings=make_settings(tmp_path), out=out) == 1
    assert f"❌ Could not reach {url}" in out.getvalue() and "memberpulse serve" in out.getvalue()
    assert "certificate" not in out.getvalue()


def test_unknown_event_and_missing_secret_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"membership\.nope"):
        send_test("membership.nope", url="http://127.0.0.1:9/x", settings=make_settings(tmp_path))
    with pytest.raises(ConfigError):
        send_test("all", url="http://127.0.0.1:9/x", settings=make_settings(tmp_path, WHOP_WEBHOOK_SECRET=None))
