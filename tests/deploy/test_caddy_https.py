"""deploy/Caddyfile in front of a real ``memberpulse serve``: real Caddy, real TLS, Caddy's local CA.

``MEMBERPULSE_DOMAIN=localhost`` makes Caddy issue the certificate from its own CA (kept in a temporary
XDG data dir, never installed into the system's trust store); the client trusts that CA's root only. The
client connects from 127.0.0.2 so the address the landing records can only have come from Caddy's
X-Forwarded-For.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from memberpulse.landing.mock_events import MockMember, mock_event, signed_delivery
from tests.support.net import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SECRET = "ws_caddy_test_7c1e9b"
CLIENT_ADDRESS = "127.0.0.2"  # any 127/8 address is loopback on Linux
CADDY = shutil.which("caddy")


@dataclass
class Stack:
    https: str  # https://localhost:<port>
    http: str
    data_dir: Path
    client: httpx.Client
    root_cert: Path  # Caddy's local CA
    env: dict[str, str]  # the landing's environment (its secret, no TLS trust settings)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def _started(args: list[str], env: dict[str, str], log: Path, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        _stop(proc)


def _until(predicate: object, proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 30) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"{what} exited:\n{log.read_text(errors='replace')[-3000:]}"
        with contextlib.suppress(httpx.HTTPError, OSError, ssl.SSLError):
            if predicate():
                return
        assert time.monotonic() < deadline, f"{what} not ready:\n{log.read_text(errors='replace')[-3000:]}"
        time.sleep(0.2)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    assert CADDY, "caddy is not installed (scripts/test.sh installs Debian's caddy package)"
    landing_port, http_port, https_port = free_port(), free_port(), free_port()
    data_dir = tmp_path / "data"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMBERPULSE_", "WHOP_", "SSL_CERT_"))}
    landing_env = {
        **base_env,
        "WHOP_WEBHOOK_SECRET": SECRET,
        "MEMBERPULSE_DATA_DIR": str(data_dir),
        "MEMBERPULSE_MAX_BODY_BYTES": "65536",
        "MEMBERPULSE_LOG_LEVEL": "WARNING",
    }
    caddy_env = {
        **base_env,
        "HOME": str(tmp_path / "caddy-home"),
        "XDG_DATA_HOME": str(tmp_path / "caddy-data"),
        "XDG_CONFIG_HOME": str(tmp_path / "caddy-config"),
        "MEMBERPULSE_DOMAIN": "localhost",
        "MEMBERPULSE_UPSTREAM": f"127.0.0.1:{landing_port}",
        "MEMBERPULSE_MAX_BODY_BYTES": "65536",
        "MEMBERPULSE_HTTP_PORT": str(http_port),
        "MEMBERPULSE_HTTPS_PORT": str(https_port),
        "CADDY_ADMIN": "off",
    }
    serve = [sys.executable, "-m", "memberpulse", "serve", "--host", "127.0.0.1", "--port", str(landing_port)]
    caddy = [CADDY, "run", "--config", str(ROOT / "deploy" / "Caddyfile"), "--adapter", "caddyfile"]
    landing_log, caddy_log = tmp_path / "landing.log", tmp_path / "caddy.log"
    root_cert = tmp_path / "caddy-data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
    with (
        _started(serve, landing_env, landing_log, tmp_path) as landing,
        _started(caddy, caddy_env, caddy_log, tmp_path) as proxy,
    ):
        upstream = f"http://127.0.0.1:{landing_port}/api/webhooks/whop"
        _until(lambda: httpx.get(upstream, timeout=2).status_code == 200, landing, landing_log, "memberpulse serve")
        _until(root_cert.is_file, proxy, caddy_log, "caddy's local CA")
        context = ssl.create_default_context(cafile=str(root_cert))
        transport = httpx.HTTPTransport(verify=context, local_address=CLIENT_ADDRESS)
        with httpx.Client(transport=transport, timeout=10) as client:
            https = f"https://localhost:{https_port}"
            _until(lambda: client.get(https + "/api/webhooks/whop").status_code == 200, proxy, caddy_log, "caddy https")
            yield Stack(
                https=https,
                http=f"http://localhost:{http_port}",
                data_dir=data_dir,
                client=client,
                root_cert=root_cert,
                env=landing_env,
            )


def _stored(data_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for p in sorted((data_dir / "landing").rglob("*.ndjson")) for line in p.open()]


def _quarantined(data_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for p in sorted((data_dir / "quarantine").glob("*.ndjson")) for line in p.open()]


def test_signed_webhooks_over_https_are_stored(stack: Stack) -> None:
    sent = []
    for n in range(3):
        body, headers = signed_delivery(mock_event("membership.went_valid", MockMember(f"mem_tls_{n}")), secret=SECRET)
        response = stack.client.post(stack.https + "/api/webhooks/whop", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["received"] is True
        sent.append(headers["webhook-id"])
    assert [r["webhook_id"] for r in _stored(stack.data_dir)] == sent
    health = stack.client.get(stack.https + "/api/webhooks/whop").json()
    assert health["status"] == "ok" and health["storage"] == "ok"


def test_a_forged_webhook_gets_403_and_the_landing_records_the_real_sender(stack: Stack) -> None:
    body, headers = signed_delivery(mock_event("membership.went_valid"), secret="ws_not_the_secret")
    headers["x-forwarded-for"] = "203.0.113.9"  # a client's own claim: Caddy does not pass it on as the sender
    response = stack.client.post(stack.https + "/api/webhooks/whop", content=body, headers=headers)
    assert response.status_code == 403
    assert _stored(stack.data_dir) == []
    [entry] = _quarantined(stack.data_dir)
    assert entry["status"] == 403 and entry["remote"] == CLIENT_ADDRESS


def test_only_the_webhook_path_is_public(stack: Stack) -> None:
    for path in ("/metrics", "/", "/api/webhooks", "/api/webhooks/whop/extra", "/docs"):
        assert stack.client.get(stack.https + path).status_code == 404, path
    assert stack.client.post(stack.https + "/metrics", content=b"{}").status_code == 404


def test_an_oversized_body_is_refused_and_nothing_is_stored(stack: Stack) -> None:
    big = b'{"pad": "' + b"x" * 200_000 + b'"}'
    declared = stack.client.post(stack.https + "/api/webhooks/whop", content=big)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit has to count the bytes as they stream
        for start in range(0, len(big), 16_384):
            yield big[start : start + 16_384]

    streamed = stack.client.post(stack.https + "/api/webhooks/whop", content=chunks())
    assert (declared.status_code, streamed.status_code) == (413, 413), (declared.text, streamed.text)
    assert declared.json() == {"error": "payload too large"}  # Caddy's answer: nothing was forwarded
    assert _stored(stack.data_dir) == []


def test_plain_http_redirects_to_https(stack: Stack) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=CLIENT_ADDRESS), timeout=10) as plain:
        response = plain.get(stack.http + "/api/webhooks/whop")
    assert response.status_code in (301, 308)
    assert response.headers["location"].startswith("https://localhost")


def test_send_test_through_caddy_needs_its_local_ca_and_says_so(stack: Stack, tmp_path: Path) -> None:
    url = stack.https + "/api/webhooks/whop"

    def send_test(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "memberpulse", "send-test", "membership.went_valid", "--url", url, *args],
            env=stack.env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    untrusted = send_test()
    assert untrusted.returncode == 1, untrusted.stdout + untrusted.stderr
    assert f"❌ The certificate of {url} is not trusted: " in untrusted.stdout
    assert "Is the endpoint running" not in untrusted.stdout
    trusted = send_test("--cacert", str(stack.root_cert))  # as docs/deploy.md shows it
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert [r["event_type"] for r in _stored(stack.data_dir)] == ["membership.went_valid"]
