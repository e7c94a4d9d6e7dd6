"""The backfill's Whop client against the simulator on 127.0.0.1, through the real whop-sdk (slow: a server per
test; test_whop_client_inprocess.py checks the same rules in-process)."""

from __future__ import annotations

import email.utils
import time
from pathlib import Path

import pytest
from whop_sdk import Member, Membership

from memberpulse.errors import ConfigError, WhopAuthError, WhopGaveUp
from memberpulse.flows.whop import (
    RetryEvent,
    RetryPolicy,
    WhopBackfillClient,
    backfill_skip_reason,
    retry_after_seconds,
)
from memberpulse.settings import Settings
from tests.support.whop_testkit import API_KEY, COMPANY_ID, PAGE_SIZE, POPULATION_SIZE, Simulator, make_settings


def client_for(settings: Settings, events: list[RetryEvent]) -> WhopBackfillClient:
    return WhopBackfillClient.from_settings(settings, on_retry=events.append)


@pytest.mark.slow
def test_reads_every_page_of_both_resources(simulator: Simulator, settings: Settings) -> None:
    events: list[RetryEvent] = []
    with client_for(settings, events) as client:
        membership_pages = list(client.pages("memberships"))
        member_pages = list(client.pages("members"))

    expected_pages = -(-POPULATION_SIZE // PAGE_SIZE)
    assert expected_pages >= 5
    assert [p.number for p in membership_pages] == list(range(1, expected_pages + 1))
    assert [p.number for p in member_pages] == list(range(1, expected_pages + 1))
    memberships = [m for p in membership_pages for m in p.items]
    members = [m for p in member_pages for m in p.items]
    assert all(isinstance(m, Membership) for m in memberships)
    assert all(isinstance(m, Member) for m in members)
    assert [m.id for m in memberships] == [m.id for m in simulator.population.memberships]
    assert [m.id for m in members] == [m.id for m in simulator.population.members]
    assert membership_pages[-1].end_cursor is None and not membership_pages[-1].has_next
    # one request per page, each asking for our page size and naming the company
    served = simulator.state.served("memberships")
    assert len(served) == expected_pages
    assert {r.first for r in served} == {PAGE_SIZE} and {r.company_id for r in served} == {COMPANY_ID}
    assert events == []


@pytest.mark.slow
def test_follows_cursors_when_the_server_caps_the_page_size(simulator: Simulator, settings: Settings) -> None:
    simulator.state.max_page_size = 25
    with client_for(settings, []) as client:
        pages = list(client.pages("members"))
    assert len(pages) == -(-POPULATION_SIZE // 25)
    assert sum(len(p.items) for p in pages) == POPULATION_SIZE


@pytest.mark.slow
def test_waits_out_a_rate_limit_storm_as_told(simulator: Simulator, settings: Settings) -> None:
    simulator.faults.rate_limit(3, retry_after=0.1, after=2)  # pages 1-2 fine, then three 429s on page 3
    events: list[RetryEvent] = []
    started = time.monotonic()
    with client_for(settings, events) as client:
        pages = list(client.pages("memberships"))
    assert sum(len(p.items) for p in pages) == POPULATION_SIZE
    assert [(e.status, e.page, e.wait) for e in events] == [(429, 3, 0.1)] * 3
    assert pages[2].attempts == 4
    assert time.monotonic() - started >= 0.3
    assert len(simulator.state.served("memberships", status=429)) == 3


@pytest.mark.slow
def test_reads_the_wait_from_the_body_when_there_is_no_retry_after(simulator: Simulator, settings: Settings) -> None:
    simulator.faults.rate_limit(1, retry_after=0.25, header=False)
    events: list[RetryEvent] = []
    with client_for(settings, events) as client:
        page = client.fetch_page("members", after=None, number=1)
    assert len(page.items) == PAGE_SIZE
    assert [(e.status, e.wait) for e in events] == [(429, 0.25)]


@pytest.mark.slow
def test_retries_server_errors_with_backoff_then_succeeds(simulator: Simulator, settings: Settings) -> None:
    simulator.faults.server_error(2, status=500, after=1)
    events: list[RetryEvent] = []
    with client_for(settings, events) as client:
        pages = list(client.pages("members"))
    assert sum(len(p.items) for p in pages) == POPULATION_SIZE
    assert [(e.status, e.page, e.attempt) for e in events] == [(500, 2, 1), (500, 2, 2)]
    base = settings.whop_backoff_base_seconds
    # jittered exponential: attempt n waits within [c/2, c], c = base * 2^(n-1)
    assert base / 2 <= events[0].wait <= base
    assert base <= events[1].wait <= 2 * base


@pytest.mark.slow
def test_retries_a_timeout(simulator: Simulator, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, simulator.base_url, MEMBERPULSE_WHOP_TIMEOUT_SECONDS=0.5, MEMBERPULSE_WHOP_MAX_ATTEMPTS=5
    )
    simulator.faults.slow(3.0, count=1)
    events: list[RetryEvent] = []
    with client_for(settings, events) as client:
        page = client.fetch_page("memberships", after=None, number=1)
    assert len(page.items) == PAGE_SIZE
    # the slow answer timed out; on a loaded machine a normal one may too, but the page still arrives
    assert events and all(e.status is None and "timed out" in e.reason for e in events)


@pytest.mark.slow
def test_gives_up_on_a_server_error_that_never_ends(simulator: Simulator, settings: Settings) -> None:
    simulator.faults.server_error(None, status=503, after=3)  # page 4 onwards: 503 forever
    started = time.monotonic()
    with client_for(settings, []) as client, pytest.raises(WhopGaveUp) as caught:
        list(client.pages("memberships"))
    err = caught.value
    assert (err.company_id, err.page, err.last_status) == (COMPANY_ID, 4, 503)
    assert COMPANY_ID in str(err) and "page 4" in str(err) and "503" in str(err)
    assert len(simulator.state.served("memberships", status=503)) == settings.whop_max_attempts
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_gives_up_on_a_rate_limit_that_never_ends_within_the_wait_bound(simulator: Simulator, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, simulator.base_url, MEMBERPULSE_WHOP_MAX_RATE_LIMIT_WAIT_SECONDS=0.5)
    simulator.faults.rate_limit(None, retry_after=0.2)
    events: list[RetryEvent] = []
    started = time.monotonic()
    with client_for(settings, events) as client, pytest.raises(WhopGaveUp) as caught:
        client.fetch_page("members", after=None, number=1)
    assert caught.value.last_status == 429 and caught.value.page == 1
    assert sum(e.wait for e in events) <= 0.5
    assert len(events) == 2  # 0.2 + 0.2 fit in 0.5; a third wait would not
    assert time.monotonic() - started < 5


def test_gives_up_when_whop_cannot_be_reached(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "http://127.0.0.1:9/api/v1")  # discard port: nothing listens
    with client_for(settings, []) as client, pytest.raises(WhopGaveUp) as caught:
        client.fetch_page("memberships", after=None, number=1)
    assert caught.value.last_status is None and "connection error" in str(caught.value)


@pytest.mark.slow
def test_a_wrong_api_key_fails_at_once_naming_the_variable(simulator: Simulator, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, simulator.base_url, WHOP_API_KEY="wrong")
    with client_for(settings, []) as client, pytest.raises(WhopAuthError) as caught:
        list(client.pages("memberships"))
    assert "401" in str(caught.value) and "WHOP_API_KEY" in str(caught.value)
    assert "wrong" not in str(caught.value) and API_KEY not in str(caught.value)
    assert len(simulator.state.served()) == 1  # no retries on 401


@pytest.mark.slow
def test_an_unknown_company_fails_at_once_naming_the_variable(simulator: Simulator, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, simulator.base_url, NEXT_PUBLIC_WHOP_COMPANY_ID="biz_other", WHOP_COMPANY_ID=None
    )
    assert settings.whop_company_id == "biz_other"  # the guide's variable name is accepted
    with client_for(settings, []) as client, pytest.raises(WhopAuthError) as caught:
        list(client.pages("members"))
    assert "403" in str(caught.value) and "WHOP_COMPANY_ID" in str(caught.value)
    assert len(simulator.state.served()) == 1


@pytest.mark.slow
def test_a_wrong_base_url_is_a_config_error(simulator: Simulator, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, simulator.base_url.removesuffix("/api/v1") + "/nope")
    with client_for(settings, []) as client, pytest.raises(ConfigError) as caught:
        client.fetch_page("members", after=None, number=1)
    assert caught.value.variable == "WHOP_API_BASE_URL"


def test_missing_configuration_is_a_skip_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("WHOP_API_KEY", "WHOP_COMPANY_ID", "NEXT_PUBLIC_WHOP_COMPANY_ID"):
        monkeypatch.delenv(variable, raising=False)
    settings = make_settings(tmp_path, "http://127.0.0.1:1/api/v1", WHOP_API_KEY=None, WHOP_COMPANY_ID=None)
    reason = backfill_skip_reason(settings)
    assert reason is not None and "WHOP_API_KEY" in reason and "WHOP_COMPANY_ID" in reason
    with pytest.raises(ConfigError):
        WhopBackfillClient.from_settings(settings)
    assert backfill_skip_reason(make_settings(tmp_path, "http://127.0.0.1:1/api/v1")) is None


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"retry-after": "12"}, None, 12.0),
        ({"Retry-After": "0.5"}, None, 0.5),
        ({"retry-after-ms": "250"}, None, 0.25),
        ({}, {"error": {"type": "rate_limit_exceeded", "message": "Try again in 12 seconds."}}, 12.0),
        ({}, {"error": {"message": "Rate limited. Try again in 1.5 s"}}, 1.5),
        ({}, "Too many requests, try again in 300ms", 0.3),
        ({}, {"error": {"message": "slow down"}}, None),
        (None, None, None),
    ],
)
def test_retry_after_sources(headers: dict[str, str] | None, body: object, expected: float | None) -> None:
    assert retry_after_seconds(headers, body) == expected


def test_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    wait = retry_after_seconds({"Retry-After": when}, None)
    assert wait is not None and 28 <= wait <= 31


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, max_rate_limit_wait=0.0, backoff_base=1.0, backoff_cap=5.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (10, 5.0)]:
        waits = [policy.backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jittered
