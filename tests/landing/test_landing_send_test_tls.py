"""``send-test`` to a real landing served over HTTPS with a CA made for the test: a certificate problem is
reported as one (not as "is the endpoint running?"), the CA is trusted through ``--cacert`` or
``SSL_CERT_FILE``, and a CA file that cannot be used stops the command with exit 2 and one line."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from memberpulse.cli.send_test import send_test
from tests.support.landing_testkit import SECRET, make_settings, read_records, running_server
from tests.support.tls import TestCA

pytestmark = pytest.mark.slow

EVENT = "membership.went_valid"


@dataclass(frozen=True)
class TlsLanding:
    url: str  # https://127.0.0.1:<port>/api/webhooks/whop
    root: Path  # the root certificate of the CA that issued the landing's certificate
    other_root: Path  # a CA that issued nothing here
    landing_dir: Path


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def tls_landing(ca: TestCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsLanding]:
    base = tmp_path_factory.mktemp("tls-landing")
    settings = make_settings(base / "data")
    with running_server(settings, tls=ca.issue(base / "certs", "127.0.0.1")) as server:
        yield TlsLanding(
            url=server.url,
            root=ca.write_root(base / "root.crt"),
            other_root=TestCA("someone else's CA").write_root(base / "other-root.crt"),
            landing_dir=settings.landing_dir,
        )


def _send_test(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``memberpulse send-test EVENT ARGS`` as a user runs it, with no TLS trust settings inherited."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR") and not k.startswith(("MEMBERPULSE_", "WHOP_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "memberpulse", "send-test", EVENT, *args],
        env={**inherited, "WHOP_WEBHOOK_SECRET": SECRET, "MEMBERPULSE_DATA_DIR": str(cwd / "data"), **env},
        cwd=cwd,  # no .env file here
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_untrusted_certificate_is_reported_as_a_certificate_problem(tls_landing: TlsLanding, tmp_path: Path) -> None:
    stored = len(read_records(tls_landing.landing_dir))
    done = _send_test(tmp_path, "--url", tls_landing.url)
    assert done.returncode == 1, done.stdout + done.stderr
    failure = next(line for line in done.stdout.splitlines() if line.startswith("❌"))
    assert failure.startswith(f"❌ The certificate of {tls_landing.url} is not trusted: "), failure
    assert "--cacert PATH" in done.stdout and "SSL_CERT_FILE" in done.stdout
    assert "Could not reach" not in done.stdout and "Is the endpoint running" not in done.stdout
    assert SECRET not in done.stdout + done.stderr
    assert len(read_records(tls_landing.landing_dir)) == stored


def test_cacert_trusts_the_ca_that_issued_the_certificate(tls_landing: TlsLanding, tmp_path: Path) -> None:
    stored = len(read_records(tls_landing.landing_dir))
    done = _send_test(tmp_path, "--url", tls_landing.url, "--cacert", str(tls_landing.root))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✅ Webhook processed successfully!" in done.stdout
    assert len(read_records(tls_landing.landing_dir)) == stored + 1


def test_ssl_cert_file_trusts_the_ca_that_issued_the_certificate(tls_landing: TlsLanding, tmp_path: Path) -> None:
    stored = len(read_records(tls_landing.landing_dir))
    done = _send_test(tmp_path, "--url", tls_landing.url, SSL_CERT_FILE=str(tls_landing.root))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(read_records(tls_landing.landing_dir)) == stored + 1


def test_cacert_wins_over_ssl_cert_file(tls_landing: TlsLanding, tmp_path: Path) -> None:
    wrong_env = {"SSL_CERT_FILE": str(tls_landing.other_root)}
    assert _send_test(tmp_path, "--url", tls_landing.url, **wrong_env).returncode == 1
    done = _send_test(tmp_path, "--url", tls_landing.url, "--cacert", str(tls_landing.root), **wrong_env)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("where", ["cacert-missing", "cacert-not-pem", "cacert-directory", "env-missing"])
def test_a_ca_file_that_cannot_be_used_is_exit_2_with_one_line(
    where: str, tls_landing: TlsLanding, tmp_path: Path
) -> None:
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("this is not a certificate\n")
    args, env, named = {
        "cacert-missing": (["--cacert", "/nonexistent/root.crt"], {}, "--cacert /nonexistent/root.crt"),
        "cacert-not-pem": (["--cacert", str(not_pem)], {}, f"--cacert {not_pem}"),
        "cacert-directory": (["--cacert", str(tmp_path)], {}, f"--cacert {tmp_path}"),
        "env-missing": ([], {"SSL_CERT_FILE": "/nonexistent/bundle.pem"}, "SSL_CERT_FILE=/nonexistent/bundle.pem"),
    }[where]
    done = _send_test(tmp_path, "--url", tls_landing.url, *args, **env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("memberpulse send-test: ") and done.stderr.count("\n") == 1, done.stderr
    assert named in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""  # stopped before anything was sent


def test_a_certificate_for_another_host_says_to_fix_the_url(ca: TestCA, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    root = ca.write_root(tmp_path / "root.crt")
    with running_server(settings, tls=ca.issue(tmp_path / "certs", "localhost")) as server:
        out = io.StringIO()  # the certificate names localhost; the URL says 127.0.0.1
        assert send_test(EVENT, url=server.url, settings=settings, out=out, cacert=root) == 1
    text = out.getvalue()
    assert f"❌ The certificate of {server.url} is not trusted: " in text
    assert "mismatch" in text and "--url" in text
    assert "Could not reach" not in text and "--cacert" not in text


def test_an_expired_certificate_says_the_server_must_renew_it(ca: TestCA, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    root = ca.write_root(tmp_path / "root.crt")
    with running_server(settings, tls=ca.issue(tmp_path / "certs", "127.0.0.1", expired=True)) as server:
        out = io.StringIO()
        assert send_test(EVENT, url=server.url, settings=settings, out=out, cacert=root) == 1
    text = out.getvalue()
    assert f"❌ The certificate of {server.url} is not trusted: certificate has expired" in text
    assert "renew" in text and "--cacert" not in text and "Could not reach" not in text


def test_https_to_a_plain_http_endpoint_is_a_failed_handshake(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    with running_server(settings) as server:
        url = server.url.replace("http://", "https://")
        out = io.StringIO()
        assert send_test(EVENT, url=url, settings=settings, out=out) == 1
    text = out.getvalue()
    assert f"❌ The TLS handshake with {url} failed: " in text
    assert "http://" in text  # the hint: serve itself speaks plain HTTP
    assert "Could not reach" not in text
