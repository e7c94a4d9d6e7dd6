"""The Whop API simulator (a stand-in for Whop's v1 REST API) on 127.0.0.1: deterministic population, answers
that parse in the real whop-sdk, cursor pagination, bearer auth, runtime faults, mutations seen live."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from whop_sdk import Whop
from whop_sdk.environment import WhopEnvironment
from whop_sdk.members.types.list_members_response import ListMembersResponse
from whop_sdk.memberships.types.list_memberships_response import ListMembershipsResponse

from memberpulse.testing.whop_faults import Faults
from memberpulse.whop_simulator import (
    VALID_STATUSES,
    Population,
    create_app,
    serve_in_thread,
    simulator_state,
)

KEY = "sim_key_for_tests"
COMPANY = "biz_simtest"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def population() -> Population:
    return Population.generate(seed=5, n=57, company_id=COMPANY, now=NOW)


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def base_url(population: Population, faults: Faults) -> Iterator[str]:
    with serve_in_thread(create_app(population, api_key=KEY, intercept=faults)) as url:
        yield url


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5) as client:
        yield client


def sdk(base_url: str, key: str = KEY) -> Whop:
    return Whop(token=key, environment=WhopEnvironment(api=base_url, vault=base_url), max_retries=0)


def test_population_is_deterministic_and_consistent() -> None:
    a = Population.generate(seed=42, n=300, company_id=COMPANY, now=NOW)
    b = Population.generate(seed=42, n=300, company_id=COMPANY, now=NOW)
    c = Population.generate(seed=43, n=300, company_id=COMPANY, now=NOW)
    assert [asdict(m) for m in a.memberships] == [asdict(m) for m in b.memberships]
    assert [asdict(m) for m in a.members] == [asdict(m) for m in b.members]
    assert [m.id for m in a.memberships] != [m.id for m in c.memberships]
    assert len(a.memberships) == len(a.members) == 300
    assert len({m.id for m in a.memberships}) == 300
    assert {m.status for m in a.memberships} >= {"active", "canceled", "expired", "trialing"}
    for membership, member in zip(a.memberships, a.members, strict=True):
        assert membership.member_id == member.id and membership.user_id == member.user.id
        assert membership.company_id == member.company_id == COMPANY
        assert (member.status == "joined") == (membership.status in VALID_STATUSES)
        assert membership.created_at <= membership.updated_at <= NOW
        if member.last_accessed_at is not None:
            assert membership.created_at <= member.last_accessed_at <= NOW
    assert any(m.last_accessed_at is None for m in a.members)  # some never opened anything


@pytest.mark.slow
def test_every_answer_parses_in_the_real_sdk(base_url: str, population: Population) -> None:
    client = sdk(base_url)
    memberships = list(client.memberships.list(account_id=COMPANY, first=10))
    members = list(client.members.list(account_id=COMPANY, first=10))
    assert [m.id for m in memberships] == [m.id for m in population.memberships]
    assert [m.id for m in members] == [m.id for m in population.members]
    first = memberships[0]
    expected = population.memberships[0]
    assert first.status == expected.status and first.user_id == expected.user_id
    assert first.member_id == expected.member_id and first.account.id == COMPANY
    assert first.model_extra is not None and first.model_extra["user"]["email"] == expected.user.email
    member = members[0]
    assert member.user is not None and member.user.username == population.members[0].user.username
    last = population.members[0].last_accessed_at
    assert member.last_accessed_at == (None if last is None else last.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")


@pytest.mark.slow
def test_cursor_pagination(http: httpx.Client, population: Population) -> None:
    seen, after, pages = [], None, []
    while True:
        params: dict[str, str | int] = {"company_id": COMPANY, "first": 25}
        if after:
            params["after"] = after
        response = http.get("/memberships", params=params)
        assert response.status_code == 200
        page = ListMembershipsResponse.model_validate(response.json())
        pages.append(page.page_info)
        seen += [m.id for m in page.data]
        after = page.page_info.end_cursor
        if after is None:
            break
    assert seen == [m.id for m in population.memberships]
    assert [p.has_next_page for p in pages] == [True, True, False]
    assert [p.has_previous_page for p in pages] == [False, True, True]
    assert http.get("/members", params={"after": "garbage!", "company_id": COMPANY}).status_code == 400
    # a memberships cursor is not a members cursor
    cursor = pages[0].end_cursor if pages[0].end_cursor else ""
    assert http.get("/members", params={"after": cursor}).status_code == 400


@pytest.mark.slow
def test_bearer_auth_and_company(base_url: str, http: httpx.Client) -> None:
    assert httpx.get(f"{base_url}/members", params={"company_id": COMPANY}).status_code == 401
    wrong = httpx.get(f"{base_url}/members", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "unauthorized"
    other = http.get("/members", params={"company_id": "biz_someone_else"})
    assert other.status_code == 403
    assert http.get("/memberships", params={"account_id": "biz_someone_else"}).status_code == 403
    assert http.get("/memberships").status_code == 200  # no company: the key's own
    assert ListMembersResponse.model_validate(http.get("/members", params={"account_id": COMPANY}).json()).data


@pytest.mark.slow
def test_rate_limit_faults(http: httpx.Client, faults: Faults) -> None:
    faults.rate_limit(2, retry_after=3)
    for _ in range(2):
        limited = http.get("/memberships")
        assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
        assert limited.json() == {"error": {"type": "rate_limit_exceeded", "message": "Try again in 3 seconds."}}
    assert http.get("/memberships").status_code == 200  # the storm ended

    faults.rate_limit(1, retry_after=0.5, header=False, endpoint="members")
    assert http.get("/memberships").status_code == 200  # other endpoint untouched
    limited = http.get("/members")
    assert limited.status_code == 429 and "retry-after" not in limited.headers
    assert limited.json()["error"]["message"] == "Try again in 0.5 seconds."


@pytest.mark.slow
def test_server_error_slow_and_never_ending_faults(http: httpx.Client, faults: Faults) -> None:
    faults.server_error(2, status=503, after=1)
    assert [http.get("/members").status_code for _ in range(4)] == [200, 503, 503, 200]

    faults.slow(0.4, count=1)
    started = time.monotonic()
    assert http.get("/members").status_code == 200
    assert time.monotonic() - started >= 0.4
    with pytest.raises(httpx.ReadTimeout):
        faults.slow(1.0)
        http.get("/members", timeout=0.2)

    faults.server_error(None)
    assert {http.get("/memberships").status_code for _ in range(5)} == {500}
    faults.clear()
    assert faults.rules == [] and http.get("/memberships").status_code == 200


@pytest.mark.slow
def test_request_log_and_page_cap(population: Population, faults: Faults) -> None:
    app = create_app(population, api_key=KEY, intercept=faults, max_page_size=20)
    with serve_in_thread(app) as url:
        pages = list(sdk(url).members.list(account_id=COMPANY, first=50).iter_pages())
    assert [len(p.items or []) for p in pages] == [20, 20, 17]
    log = simulator_state(app).served("members", status=200)
    assert [r.first for r in log] == [50, 50, 50] and log[0].after is None and log[1].after is not None


@pytest.mark.slow
def test_mutations_show_up_in_a_running_app(base_url: str, population: Population) -> None:
    client = sdk(base_url)
    target = next(m for m in population.memberships if m.status == "active")
    at = NOW + timedelta(minutes=5)
    population.set_status(target.id, "canceled", at=at)
    population.record_access(population.memberships[1].id, at=at)

    served = {m.id: m for m in client.memberships.list(account_id=COMPANY, first=100)}
    assert served[target.id].status == "canceled"
    assert served[target.id].canceled_at == served[target.id].updated_at == "2026-11-27T12:05:00.000Z"
    members = {m.id: m for m in client.members.list(account_id=COMPANY, first=100)}
    assert members[target.member_id].status == "left"
    assert members[population.memberships[1].member_id].last_accessed_at == "2026-11-27T12:05:00.000Z"


@pytest.mark.slow
def test_serve_in_thread_stops_when_the_block_ends(population: Population) -> None:
    with serve_in_thread(create_app(population, api_key=KEY)) as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api/v1")
        assert httpx.get(f"{url}/members", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/members", timeout=1)


@pytest.mark.slow
def test_several_companies_an_app_key_own_keys_an_uninstall_and_whops_rate_limit() -> None:
    """An app's key reads every company that installed the app; a company's own key reads that company only;
    after an uninstall the app's key gets 403 for it; past N requests in any window a key gets Whop's 429
    (its body, no Retry-After), which does not count, and the other key is not held back."""
    a, b = (Population.generate(seed=s, n=12, company_id=c, now=NOW) for s, c in ((1, "biz_a"), (2, "biz_b")))
    app = create_app([a, b], api_key=KEY, company_keys={"biz_b": "own_b"}, rate_limit=(4, 30.0))
    state = simulator_state(app)
    with serve_in_thread(app) as url:
        app_key, own = sdk(url), sdk(url, "own_b")
        assert [m.id for m in app_key.memberships.list(account_id="biz_b", first=50).items] == [
            m.id for m in b.memberships
        ]
        assert len(own.members.list(account_id="biz_b", first=50).items) == 12
        with pytest.raises(Exception, match="403"):
            own.members.list(account_id="biz_a", first=50)
        state.uninstall("biz_a")
        with pytest.raises(Exception, match="403"):
            app_key.memberships.list(account_id="biz_a", first=50)
        app_key.members.list(account_id="biz_b", first=50)
        app_key.members.list(account_id="biz_b", first=50)  # the app key's 4th in the window (the 403 counted)
        throttled = httpx.get(
            f"{url}/members", params={"account_id": "biz_b"}, headers={"Authorization": f"Bearer {KEY}"}
        )
        assert own.members.list(account_id="biz_b", first=50).items  # its own key's budget is its own
    assert throttled.status_code == 429 and "retry-after" not in throttled.headers
    assert throttled.json()["error"]["type"] == "rate_limit_exceeded"
    assert throttled.json()["error"]["message"].startswith("Try again in ")
    assert [r.credential for r in state.served(status=429)] == ["app"]
