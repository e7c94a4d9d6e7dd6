"""Landing replicas with the storage URL set, as real ``memberpulse serve`` processes against moto's S3 server (the
named S3 stand-in): what an acknowledgement survives. A replica killed with SIGKILL and restarted on its disk
loses nothing; a store that stops answering does not slow the acknowledgements, and shipping catches up after;
a replica whose disk is gone loses only what it had not shipped, which ``recover`` brings back from Whop's
delivery log (the Whop simulator's), shipped before it reports success."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from memberpulse.flows.raw.remote import pull_raw
from memberpulse.flows.recover import recover
from memberpulse.landing import mock_events as mock
from memberpulse.settings import Settings, load_settings
from memberpulse.storage import ObjectStore, open_store
from memberpulse.whop_simulator import Population, WebhookHub, create_app, serve_in_thread
from tests.support.blackhole import BlackholeProxy
from tests.support.landing_process import SECRET, LandingProcess, landing_process
from tests.support.landing_testkit import read_records

pytestmark = pytest.mark.slow

COMPANY = "biz_replicas"
API_KEY = "sim_key_replicas"


@pytest.fixture
def store(storage_env: dict[str, str]) -> ObjectStore:
    opened = open_store(load_settings())
    assert opened is not None
    return opened


def _payloads(tag: str, n: int) -> list[mock.Payload]:
    who = mock.MockMember(membership_id=f"mem_{tag}", user_id=f"user_{tag}", company_id=COMPANY)
    now = datetime.now(UTC)
    return [{**mock.accessed(who, accessed_at=now), "id": f"msg_{tag}_{i:04d}"} for i in range(n)]


def _post_all(landing: LandingProcess, payloads: list[mock.Payload]) -> list[float]:
    """POST each webhook; every one must be acknowledged. Returns each acknowledgement's seconds."""
    seconds = []
    with httpx.Client(timeout=30) as client:
        for payload in payloads:
            body, headers = mock.signed_delivery(payload, secret=SECRET, webhook_id=payload["id"])
            started = time.perf_counter()
            reply = client.post(landing.url, content=body, headers=headers)
            seconds.append(time.perf_counter() - started)
            assert reply.status_code == 200, reply.text
    return seconds


def _ids_in_store(store: ObjectStore, cache: Path) -> list[str]:
    """Every webhook id a worker with an empty cache gets from the store (the cache is made anew each time)."""
    for old in sorted(cache.glob("**/*"), reverse=True):
        old.unlink() if old.is_file() else old.rmdir()
    pull_raw(store, cache)
    return [r["webhook_id"] for r in read_records(cache)]


def _wait_for_ids(store: ObjectStore, cache: Path, expected: set[str], seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while True:
        ids = _ids_in_store(store, cache)
        if set(ids) >= expected or time.monotonic() > deadline:
            return ids
        time.sleep(0.5)


def test_a_replica_killed_and_restarted_loses_nothing_it_acknowledged(
    store: ObjectStore, storage_env: dict[str, str], tmp_path: Path
) -> None:
    disk = tmp_path / "replica"
    # A ship interval longer than the test: nothing is shipped before the kill, all of it after the restart.
    env = {**storage_env, "MEMBERPULSE_SHIP_INTERVAL_SECONDS": "60"}
    payloads = _payloads("killed", 40)
    with landing_process(disk, **env) as first:
        _post_all(first, payloads)
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
    assert _ids_in_store(store, tmp_path / "cache") == []
    with landing_process(disk, "restarted.log", **env):
        ids = _wait_for_ids(store, tmp_path / "cache", {p["id"] for p in payloads}, 30)
    assert sorted(ids) == sorted(p["id"] for p in payloads)  # each once


def test_a_store_outage_does_not_slow_acknowledgements_and_shipping_catches_up(
    store: ObjectStore, storage_env: dict[str, str], tmp_path: Path
) -> None:
    endpoint = urlparse(storage_env["AWS_ENDPOINT_URL"])
    assert endpoint.hostname is not None and endpoint.port is not None
    with BlackholeProxy((endpoint.hostname, endpoint.port)) as proxy:
        env = {
            **storage_env,
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}",
            "MEMBERPULSE_SHIP_INTERVAL_SECONDS": "0.2",
            "MEMBERPULSE_STORAGE_TIMEOUT_SECONDS": "10",
        }
        before, during = _payloads("before", 10), _payloads("during", 60)
        with landing_process(tmp_path / "replica", **env) as landing:
            _post_all(landing, before)
            _wait_for_ids(store, tmp_path / "cache", {p["id"] for p in before}, 30)
            proxy.stall_after(0)
            seconds = _post_all(landing, during)
            # A store request waits up to 10 s before it fails: an acknowledgement that waited on the store
            # would take that long; these are fsync-bound.
            assert max(seconds) < 5, seconds
            assert proxy.stalled.wait(30)  # the shipper tried, and the store did not answer
            assert _ids_in_store(store, tmp_path / "cache") == [p["id"] for p in before]
            assert _lag_reaches(landing, 2.0, within=30)  # the health answer says shipping is behind
            proxy.heal()
            ids = _wait_for_ids(store, tmp_path / "cache", {p["id"] for p in before + during}, 90)
    assert sorted(ids) == sorted(p["id"] for p in before + during)


def _lag_reaches(landing: LandingProcess, seconds: float, *, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        answer = httpx.get(landing.url, timeout=5)
        if answer.status_code == 200 and answer.json()["shipping"]["lag_seconds"] >= seconds:
            return True
        time.sleep(0.2)
    return False


@contextmanager
def _whop(hub: WebhookHub) -> Iterator[str]:
    population = Population.generate(seed=5, n=2, company_id=COMPANY)
    with serve_in_thread(create_app(population, api_key=API_KEY, webhooks=hub)) as api:
        yield api


def test_a_lost_replica_loses_nothing_recover_cannot_bring_back(
    store: ObjectStore, storage_env: dict[str, str], tmp_path: Path
) -> None:
    """Replica A ships what it acknowledged; replica B is killed before its next ship and its disk is gone. A
    worker on a third host with an empty cache runs ``recover``: what only B's disk held comes back from Whop's
    delivery log and is shipped, so a fourth host with an empty cache reads every acknowledged webhook once."""
    hub = WebhookHub(COMPANY, timeout=5.0)
    shipped, unshipped = _payloads("a", 20), _payloads("b", 20)
    with _whop(hub) as api:
        with landing_process(tmp_path / "a", **storage_env, MEMBERPULSE_SHIP_INTERVAL_SECONDS="0.2") as a:
            hook = hub.register(a.url, secret=SECRET)
            assert all(d.success for d in hub.send_many(hook.id, shipped))
            _wait_for_ids(store, tmp_path / "cache", {p["id"] for p in shipped}, 30)
        with landing_process(tmp_path / "b", **storage_env, MEMBERPULSE_SHIP_INTERVAL_SECONDS="60") as b:
            hub.hooks[hook.id] = replace(hub.hooks[hook.id], url=b.url)  # the load balancer sends to B now
            assert all(d.success for d in hub.send_many(hook.id, unshipped))
            os.kill(b.proc.pid, signal.SIGKILL)
            b.proc.wait(timeout=10)
        _remove_tree(tmp_path / "b")  # the host is gone, and its disk with it
        worker = Settings(
            MEMBERPULSE_DATA_DIR=str(tmp_path / "worker"), WHOP_API_KEY=API_KEY, WHOP_COMPANY_ID=COMPANY,
            WHOP_API_BASE_URL=api, WHOP_WEBHOOK_ID=hook.id, WHOP_WEBHOOK_SECRET=SECRET,
        )  # fmt: skip
        result = recover(worker)
    assert result.recovered == len(unshipped) and result.already_stored == len(shipped)
    ids = _ids_in_store(store, tmp_path / "fresh")
    assert sorted(ids) == sorted(p["id"] for p in shipped + unshipped)


def _remove_tree(root: Path) -> None:
    for path in sorted(root.glob("**/*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    root.rmdir()
