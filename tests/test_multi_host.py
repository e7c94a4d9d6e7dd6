"""Several hosts that share nothing but a network: two landing replicas, a worker and moto's S3 server (the named
S3 stand-in) each in a network namespace of its own, joined by veth pairs to one bridge (tests/support/netns.py).
Each replica has only its own disk; the worker starts with an empty cache and gets every acknowledged webhook,
once, from the object store alone — including those of a replica killed with SIGKILL after its last ship."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from memberpulse.landing import mock_events as mock
from tests.support.landing_testkit import read_records
from tests.support.netns import Network, network, unavailable_reason
from tests.support.object_store import S3Server, s3_server

pytestmark = [pytest.mark.slow, pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))]

SECRET = "ws_multi_host_6c1f0e9a2b7d4853"
PORT = 8080  # each host has its own ports: no other process can hold it
PATH = "/api/webhooks/whop"


@contextmanager
def replica(net: Network, host: str, data_dir: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    data_dir.mkdir(parents=True)
    address = net.address(host)
    with open(data_dir / "serve.log", "wb") as log:
        proc = net.popen(
            host,
            [sys.executable, "-m", "memberpulse", "serve", "--host", address, "--port", str(PORT)],
            env={**env, "MEMBERPULSE_DATA_DIR": str(data_dir)},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        _wait_healthy(f"http://{address}:{PORT}{PATH}", proc, data_dir)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], data_dir: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (data_dir / "serve.log").read_text()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the replica did not come up: " + (data_dir / "serve.log").read_text()
        time.sleep(0.2)


def _post(url: str, ids: list[str]) -> None:
    who = mock.MockMember(membership_id="mem_hosts", user_id="user_hosts", company_id="biz_hosts")
    with httpx.Client(timeout=30) as client:
        for webhook_id in ids:
            payload = mock.accessed(who, accessed_at=datetime.now(UTC))
            body, headers = mock.signed_delivery(payload, secret=SECRET, webhook_id=webhook_id)
            assert client.post(url, content=body, headers=headers).status_code == 200


def _shipped(url: str) -> bool:
    shipping = httpx.get(url, timeout=5).json()["shipping"]
    return bool(shipping["ok"]) and shipping["lag_seconds"] < 1.0


def _wait_shipped(url: str) -> None:
    deadline = time.monotonic() + 60
    while not _shipped(url):
        assert time.monotonic() < deadline, "the replica did not ship what it stored"
        time.sleep(0.2)
    time.sleep(1.0)  # a pass that began after the last acknowledgement has finished: lag < 1 s measured after it


def _environment(s3: S3Server) -> dict[str, str]:
    """What every host's processes get: the store (reached across the bridge), the webhook secret, nothing else."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MEMBERPULSE_", "WHOP_", "AWS_"))},
        **s3.environment(),
        "MEMBERPULSE_STORAGE_URL": f"s3://{s3.new_bucket()}/memberpulse",
        "MEMBERPULSE_SHIP_INTERVAL_SECONDS": "0.2",
        "WHOP_WEBHOOK_SECRET": SECRET,
    }


def test_two_replicas_a_worker_and_the_store_on_four_hosts(tmp_path: Path) -> None:
    ids_a, ids_b = [f"msg_a_{i:03d}" for i in range(15)], [f"msg_b_{i:03d}" for i in range(15)]
    with (
        network(["store", "a", "b", "worker"]) as net,
        s3_server(net.address("store"), launcher=["ip", "netns", "exec", net.hosts["store"]]) as s3,
    ):
        env = _environment(s3)
        with replica(net, "a", tmp_path / "a", env), replica(net, "b", tmp_path / "b", env) as b:
            _post(f"http://{net.address('a')}:{PORT}{PATH}", ids_a)
            url_b = f"http://{net.address('b')}:{PORT}{PATH}"
            _post(url_b, ids_b)
            _wait_shipped(url_b)
            b.send_signal(signal.SIGKILL)  # B's host dies; what it shipped is in the store
            b.wait(timeout=10)
        run = net.run(
            "worker",
            [sys.executable, "-m", "memberpulse", "run", "--json"],
            env={**env, "MEMBERPULSE_DATA_DIR": str(tmp_path / "worker")},
            capture_output=True,
            timeout=300,
        )
    assert run.returncode == 0, run.stderr
    cached = [r["webhook_id"] for r in read_records(tmp_path / "worker" / "landing")]
    assert sorted(cached) == sorted(ids_a + ids_b)
    report = json.loads(run.stdout)
    assert report["records_read"] == len(ids_a + ids_b), report
