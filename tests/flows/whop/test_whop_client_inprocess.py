"""The backfill's Whop client through the real whop-sdk, with Whop answered in-process by ``httpx.MockTransport``.

The fast counterpart of test_whop_client.py (which runs the same client against the simulator served on
127.0.0.1): no server, no real waits (the client's ``sleep`` is recorded), so the retry rules are checked in
milliseconds. The pages are the simulator's population rendered as Whop's JSON (a stand-in for Whop).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from whop_sdk import Member, Membership

from memberpulse.errors import ConfigError, WhopAuthError, WhopGaveUp
from memberpulse.flows.whop import DEFAULT_WHOP_CLIENT_CONFIG, RetryEvent, WhopBackfillClient
from memberpulse.flows.whop._records import Resource
from memberpulse.settings import Settings
from memberpulse.whop_simulator import Population
from memberpulse.whop_simulator._app import _member_json, _membership_json
from tests.support.publish_data import SleepRecorder
from tests.support.whop_testkit import API_KEY, COMPANY_ID, NOW

BASE_URL = "https://whop.test/api/v1"
POPULATION = Population.generate(seed=5, n=23, company_id=COMPANY_ID, now=NOW)
PAGE_SIZE = 10  # 23 records: pages of 10, 10, 3
Answer = httpx.Response | Exception


@dataclass
class ScriptedWhop:
    """Whop's two list endpoints over the population (offset cursors), after any scripted answers queued
    in ``script`` (one per request, in order; an exception is raised as the transport would)."""

    script: deque[Answer] = field(default_factory=deque)
    requests: list[httpx.Request] = field(default_factory=list)
    repeat_cursor: bool = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.script:
            answer = self.script.popleft()
            if isinstance(answer, Exception):
                raise answer
            return answer
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return _error(401, "Invalid or missing API key.")
        if request.url.params.get("account_id") != COMPANY_ID:
            return _error(403, "This API key has no access to this account.")
        resource = request.url.path.rsplit("/", 1)[1]
        if resource not in ("memberships", "members"):
            return _error(404, "Not found.")
        return self._page(resource, request.url.params)

    def _page(self, resource: str, params: httpx.QueryParams) -> httpx.Response:
        records: list[Any] = POPULATION.memberships if resource == "memberships" else POPULATION.members
        render = _membership_json if resource == "memberships" else _member_json
        offset = int(params.get("after") or 0)
        first = int(params["first"])
        end = min(offset + first, len(records))
        has_next = end < len(records)
        cursor = str(offset if self.repeat_cursor else end) if has_next else None
        page_info = {"start_cursor": str(offset), "end_cursor": cursor, "has_next_page": has_next,
                     "has_previous_page": offset > 0}  # fmt: skip
        return httpx.Response(200, json={"data": [render(r) for r in records[offset:end]], "page_info": page_info})

    def queue(self, *answers: Answer) -> None:
        self.script.extend(answers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"type": "error", "message": message}}, headers=headers)


@pytest.fixture
def whop() -> ScriptedWhop:
    return ScriptedWhop()


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def events() -> list[RetryEvent]:
    return []


@pytest.fixture
def client(whop: ScriptedWhop, sleeps: SleepRecorder, events: list[RetryEvent]) -> Iterator[WhopBackfillClient]:
    with _client(whop, sleeps, events) as c:
        yield c


def _client(
    whop: ScriptedWhop, sleeps: SleepRecorder, events: list[RetryEvent], *, api_key: str = API_KEY, **policy: Any
) -> WhopBackfillClient:
    retry = replace(
        DEFAULT_WHOP_CLIENT_CONFIG.retry,
        **{"max_attempts": 3, "max_rate_limit_wait": 2.0, "backoff_base": 0.05, **policy},
    )
    return WhopBackfillClient(
        api_key=api_key,
        company_id=COMPANY_ID,
        base_url=BASE_URL,
        config=replace(DEFAULT_WHOP_CLIENT_CONFIG, page_size=PAGE_SIZE, retry=retry),
        on_retry=events.append,
        sleep=sleeps,
        transport=httpx.MockTransport(whop),
    )


def _pages_read(whop: ScriptedWhop) -> list[str | None]:
    return [r.url.params.get("after") for r in whop.requests]


def test_reads_every_page_following_the_cursors(whop: ScriptedWhop, client: WhopBackfillClient) -> None:
    memberships = list(client.pages("memberships"))
    members = list(client.pages("members"))
    assert [(p.number, len(p.items), p.has_next) for p in memberships] == [(1, 10, True), (2, 10, True), (3, 3, False)]
    assert [m.id for p in memberships for m in p.items] == [m.id for m in POPULATION.memberships]
    assert [m.id for p in members for m in p.items] == [m.id for m in POPULATION.members]
    assert all(isinstance(m, Membership) for p in memberships for m in p.items)
    assert all(isinstance(m, Member) for p in members for m in p.items)
    assert _pages_read(whop) == [None, "10", "20"] * 2
    assert {(r.method, r.url.params["first"], r.url.params["account_id"]) for r in whop.requests} == {
        ("GET", str(PAGE_SIZE), COMPANY_ID)
    }
    assert [r.url.path for r in whop.requests] == ["/api/v1/memberships"] * 3 + ["/api/v1/members"] * 3


def test_an_empty_page_ends_the_listing_even_if_whop_says_there_is_more(
    whop: ScriptedWhop, client: WhopBackfillClient
) -> None:
    page_info = {"start_cursor": None, "end_cursor": "x", "has_next_page": True, "has_previous_page": False}
    whop.queue(httpx.Response(200, json={"data": [], "page_info": page_info}))
    assert [len(p.items) for p in client.pages("members")] == [0]


def test_the_same_cursor_twice_stops_instead_of_looping(whop: ScriptedWhop, client: WhopBackfillClient) -> None:
    whop.repeat_cursor = True
    with pytest.raises(WhopGaveUp, match=r"cursor .0. handed out again \(first by page 1\)") as caught:
        list(client.pages("memberships"))
    assert caught.value.page == 2 and len(whop.requests) == 2


@pytest.mark.parametrize(
    ("headers", "body_message", "expected_wait"),
    [
        ({"Retry-After": "1.5"}, "Too many requests", 1.5),
        ({"retry-after-ms": "250"}, "Too many requests", 0.25),
        ({}, "Rate limited. Try again in 0.75 seconds.", 0.75),
        ({"Retry-After": "0"}, "Try again in 0 seconds", 0.1),  # never faster than MIN_RATE_LIMIT_WAIT
    ],
)
def test_a_429_is_waited_out_as_whop_says(
    whop: ScriptedWhop,
    client: WhopBackfillClient,
    sleeps: SleepRecorder,
    events: list[RetryEvent],
    headers: dict[str, str],
    body_message: str,
    expected_wait: float,
) -> None:
    whop.queue(_error(429, body_message, headers))
    page = client.fetch_page("memberships", after=None, number=1)
    assert len(page.items) == PAGE_SIZE and page.attempts == 2
    assert sleeps.calls == [expected_wait]
    assert [(e.status, e.page, e.attempt, e.reason) for e in events] == [(429, 1, 1, "rate limited")]


def test_429s_do_not_use_up_the_attempts_for_server_errors(
    whop: ScriptedWhop, client: WhopBackfillClient, sleeps: SleepRecorder
) -> None:
    # max_attempts=3 counts 5xx/timeouts only: five 429s and two 503s still end in a page
    whop.queue(*[_error(429, "slow down", {"Retry-After": "0.1"})] * 5, _error(503, "down"), _error(503, "down"))
    page = client.fetch_page("members", after=None, number=1)
    assert len(page.items) == PAGE_SIZE and page.attempts == 8 and len(sleeps.calls) == 7


def test_a_rate_limit_that_never_ends_gives_up_at_the_summed_wait_bound(
    whop: ScriptedWhop, client: WhopBackfillClient, sleeps: SleepRecorder
) -> None:
    whop.queue(*[_error(429, "slow down", {"Retry-After": "0.8"})] * 10)
    with pytest.raises(WhopGaveUp, match="still rate limited after 3 answers") as caught:
        client.fetch_page("members", after=None, number=1)
    assert sleeps.calls == [0.8, 0.8]  # a third 0.8 s would pass the 2 s bound
    assert (caught.value.page, caught.value.last_status) == (1, 429)
    assert "MEMBERPULSE_WHOP_MAX_RATE_LIMIT_WAIT_SECONDS" in str(caught.value)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 409])
def test_retryable_answers_are_retried_with_growing_backoff(
    whop: ScriptedWhop, client: WhopBackfillClient, sleeps: SleepRecorder, events: list[RetryEvent], status: int
) -> None:
    whop.queue(_error(status, "oops"), _error(status, "oops"))
    page = client.fetch_page("memberships", after=None, number=1)
    assert len(page.items) == PAGE_SIZE and page.attempts == 3
    assert [(e.status, e.attempt) for e in events] == [(status, 1), (status, 2)]
    assert 0.025 <= sleeps.calls[0] <= 0.05 and 0.05 <= sleeps.calls[1] <= 0.1  # jittered, doubling


def test_server_errors_give_up_after_the_bounded_attempts(
    whop: ScriptedWhop, client: WhopBackfillClient, sleeps: SleepRecorder
) -> None:
    whop.queue(*[_error(503, "down")] * 10)
    with pytest.raises(WhopGaveUp) as caught:
        client.fetch_page("memberships", after="10", number=2)
    err = caught.value
    assert (err.company_id, err.page, err.last_status) == (COMPANY_ID, 2, 503)
    assert "on all 3 attempts" in str(err) and "page 2" in str(err)
    assert len(whop.requests) == 3 and len(sleeps.calls) == 2


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (httpx.ReadTimeout("read timed out"), "timed out after 30 s"),
        (httpx.ConnectError("connection refused"), "connection error (ConnectError)"),
    ],
)
def test_timeouts_and_connection_errors_are_retried_then_give_up(
    whop: ScriptedWhop, client: WhopBackfillClient, events: list[RetryEvent], failure: Exception, reason: str
) -> None:
    whop.queue(failure)
    assert len(client.fetch_page("members", after=None, number=1).items) == PAGE_SIZE
    assert [(e.status, e.reason) for e in events] == [(None, reason)]
    whop.queue(failure, failure, failure)
    with pytest.raises(WhopGaveUp, match="no HTTP answer") as caught:
        client.fetch_page("members", after=None, number=1)
    assert caught.value.last_status is None


def test_a_wrong_api_key_fails_at_once_without_showing_it(whop: ScriptedWhop, sleeps: SleepRecorder) -> None:
    with _client(whop, sleeps, [], api_key="sk_wrong_key") as client, pytest.raises(WhopAuthError) as caught:
        list(client.pages("memberships"))
    message = str(caught.value)
    assert "401" in message and "WHOP_API_KEY" in message and "sk_wrong_key" not in message
    assert len(whop.requests) == 1 and sleeps.calls == []


def test_a_company_the_key_cannot_read_fails_at_once(whop: ScriptedWhop, client: WhopBackfillClient) -> None:
    whop.queue(_error(403, "no access"))
    with pytest.raises(WhopAuthError, match="403") as caught:
        list(client.pages("members"))
    assert "WHOP_COMPANY_ID" in str(caught.value) and API_KEY not in str(caught.value)
    assert len(whop.requests) == 1


def test_a_404_names_the_base_url_setting(whop: ScriptedWhop, client: WhopBackfillClient) -> None:
    whop.queue(_error(404, "Not found."))
    with pytest.raises(ConfigError) as caught:
        client.fetch_page("members", after=None, number=1)
    assert caught.value.variable == "WHOP_API_BASE_URL" and len(whop.requests) == 1


def test_another_client_error_is_not_retried(whop: ScriptedWhop, client: WhopBackfillClient) -> None:
    whop.queue(_error(422, "bad first"))
    with pytest.raises(WhopGaveUp, match="422, not retryable"):
        client.fetch_page("members", after=None, number=1)
    assert len(whop.requests) == 1


@pytest.mark.parametrize("resource", ["memberships", "members"])
def test_an_answer_the_sdk_cannot_parse_stops_with_a_hint(
    whop: ScriptedWhop, client: WhopBackfillClient, resource: Resource
) -> None:
    whop.queue(httpx.Response(200, json={"data": [{"id": "x"}], "page_info": {}}))
    with pytest.raises(WhopGaveUp, match="did not match whop-sdk's model") as caught:
        client.fetch_page(resource, after=None, number=1)
    assert "upgrade whop-sdk" in str(caught.value) and len(whop.requests) == 1


def test_the_client_reads_whop_as_its_settings_say(whop: ScriptedWhop, sleeps: SleepRecorder) -> None:
    settings = Settings(_env_file=None, WHOP_API_KEY=API_KEY, WHOP_COMPANY_ID=COMPANY_ID,  # type: ignore[call-arg]
                        WHOP_API_BASE_URL=BASE_URL, MEMBERPULSE_WHOP_PAGE_SIZE="7",
                        MEMBERPULSE_WHOP_TIMEOUT_SECONDS="4.5")  # fmt: skip
    with WhopBackfillClient.from_settings(settings, sleep=sleeps, transport=httpx.MockTransport(whop)) as client:
        assert len(client.fetch_page("memberships", after=None, number=1).items) == 7
    assert whop.requests[0].url.params["first"] == "7"
    assert set(whop.requests[0].extensions["timeout"].values()) == {4.5}


def test_a_client_made_without_a_config_reads_with_the_settings_defaults(whop: ScriptedWhop) -> None:
    transport = httpx.MockTransport(whop)
    with WhopBackfillClient(api_key=API_KEY, company_id=COMPANY_ID, base_url=BASE_URL, transport=transport) as client:
        client.fetch_page("members", after=None, number=1)
    defaults = Settings.model_fields
    assert whop.requests[0].url.params["first"] == str(defaults["whop_page_size"].default)
    assert set(whop.requests[0].extensions["timeout"].values()) == {defaults["whop_timeout_seconds"].default}
