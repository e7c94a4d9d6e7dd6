"""Mock webhooks for ``memberpulse send-test EVENT|all``, the ``pnpm test:webhook`` of the TypeScript webhook guide
this project started from: each built, signed with the first configured secret (Standard Webhooks, as Whop
signs) and posted by a :class:`MockWebhookSender`, which returns the endpoint's answer or why there was none.
The CLI shows the guide's sections (``memberpulse.cli.send_test``).

Over HTTPS it trusts ``--cacert`` (``cacert``), else ``SSL_CERT_FILE``, else httpx's default CAs; a
certificate or handshake failure is reported as what it is, with what to change, not as an unreachable endpoint.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from memberpulse.contracts.events import SUPPORTED_EVENTS
from memberpulse.errors import ConfigError, InvalidInput
from memberpulse.landing.mock_events import TEST_MEMBER, encode, mock_event, new_test_webhook_id, standard_headers
from memberpulse.settings import Settings

# OpenSSL's verify codes (X509_V_ERR_*), which the ssl module does not name.
_UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21})  # no trusted CA issued it (self-signed, a private CA, …)
_WRONG_HOST = frozenset({62, 64})  # issued for another host name / IP address
_HINT_TRUST_THE_CA = "Trust the CA that issued it: pass --cacert PATH (e.g. Caddy's root.crt) or set SSL_CERT_FILE."
_HINT_FIX_THE_URL = "Use a host name the certificate was issued for in --url (the domain the proxy serves)."
_HINT_FIX_THE_CERTIFICATE = "The server's certificate itself must be fixed: renew or reissue it."
_HINT_NOT_HTTPS = "Is it an HTTPS endpoint? memberpulse serve itself speaks plain http:// (HTTPS is the proxy's job)."
# "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)" -> "wrong version number"
_OPENSSL_DECORATION = re.compile(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$")


@dataclass(frozen=True)
class SignedMockWebhook:
    """One mock event as it is sent: its payload, the exact body and the signed headers."""

    event: str
    payload: dict[str, Any]
    body: bytes
    headers: dict[str, str]

    @property
    def signature(self) -> str:
        return self.headers["webhook-signature"]


@dataclass(frozen=True)
class EndpointReply:
    """The endpoint's answer (``status``, body ``text``), or why there was none (``problem``, ``hint``)."""

    status: int | None = None
    text: str = ""
    problem: str | None = None
    hint: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 200


def events_to_send(event: str) -> list[str]:
    """The events ``send-test EVENT`` sends: that one, or every supported one for ``all``."""
    events = list(SUPPORTED_EVENTS) if event == "all" else [event]
    unknown = [e for e in events if e not in SUPPORTED_EVENTS]
    if unknown:
        raise InvalidInput(
            f"unknown event {unknown[0]!r}", value=unknown[0], hint=f"use one of {', '.join(SUPPORTED_EVENTS)} or all"
        )
    return events


class MockWebhookSender:
    """Signs mock events with the first configured secret and posts them to ``url``; a missing secret or an
    unusable CA file is a ConfigError (exit 2) before anything is sent.

    ``cacert``: a PEM file of the CAs to trust for an ``https://`` URL (see :func:`trusted_cas`).
    """

    def __init__(self, *, url: str, settings: Settings, cacert: Path | None = None) -> None:
        self.url = url
        self._secret = settings.require_webhook_secrets()[0]
        self._client = httpx.Client(timeout=30, verify=trusted_cas(cacert))

    def __enter__(self) -> MockWebhookSender:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._client.close()

    def sign(self, event: str) -> SignedMockWebhook:
        # Test ids (``test_`` prefix): stored like any webhook, kept out of the published members by reconcile.
        webhook_id = new_test_webhook_id()
        payload = mock_event(event, TEST_MEMBER, event_id=webhook_id)
        body = encode(payload)
        return SignedMockWebhook(
            event, payload, body, standard_headers(body, secret=self._secret, webhook_id=webhook_id)
        )

    def post(self, webhook: SignedMockWebhook) -> EndpointReply:
        try:
            response = self._client.post(self.url, content=webhook.body, headers=webhook.headers)
        except httpx.HTTPError as exc:
            return _no_answer(self.url, exc)
        return EndpointReply(status=response.status_code, text=response.text)


def trusted_cas(cacert: Path | None) -> ssl.SSLContext | bool:
    """What the client trusts: ``cacert``, else the file ``SSL_CERT_FILE`` names, else httpx's default (``True``).

    The context is built here rather than left to httpx so that a file that cannot be used is a one-line
    ``ConfigError`` naming it, whichever httpx version is installed and whatever it does with ``SSL_CERT_FILE``.
    Either file replaces the default CAs, as ``curl --cacert`` and OpenSSL's ``SSL_CERT_FILE`` do.
    """
    if cacert is not None:
        hint = "give a PEM file of the CA that issued the server's certificate, e.g. Caddy's local root.crt"
        return _ca_context(cacert, source=f"--cacert {cacert}", hint=hint)
    from_env = os.environ.get("SSL_CERT_FILE")
    if from_env:
        hint = "point SSL_CERT_FILE at a PEM file of CA certificates, or unset it"
        return _ca_context(Path(from_env), source=f"SSL_CERT_FILE={from_env}", hint=hint)
    return True


def _ca_context(path: Path, *, source: str, hint: str) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(path))
    except OSError as exc:  # missing, unreadable, a directory (OSError), or no certificate in it (ssl.SSLError)
        raise ConfigError(f"{source}: cannot use it as CA certificates: {_error_text(exc)}", hint=hint) from exc


def _error_text(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return _OPENSSL_DECORATION.sub("", str(exc.args[1] if len(exc.args) > 1 else exc))
    return exc.strerror or str(exc)


def _tls_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind an httpx error (httpx wraps httpcore's error, which wraps the ssl one)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe_tls_failure(url: str, error: ssl.SSLError) -> tuple[str, str]:
    """(what went wrong, what to change) for a TLS failure talking to ``url``."""
    if not isinstance(error, ssl.SSLCertVerificationError):
        return f"The TLS handshake with {url} failed: {_error_text(error)}", _HINT_NOT_HTTPS
    problem = f"The certificate of {url} is not trusted: {error.verify_message}"
    if error.verify_code in _UNKNOWN_ISSUER:
        return problem, _HINT_TRUST_THE_CA
    if error.verify_code in _WRONG_HOST:
        return problem, _HINT_FIX_THE_URL
    return problem, _HINT_FIX_THE_CERTIFICATE


def _no_answer(url: str, exc: httpx.HTTPError) -> EndpointReply:
    tls_error = _tls_cause(exc)
    if tls_error is not None:  # the server answered, but TLS failed: "is it running?" would mislead
        problem, hint = describe_tls_failure(url, tls_error)
        return EndpointReply(problem=problem, hint=hint)
    return EndpointReply(
        problem=f"Could not reach {url}: {exc.__class__.__name__}: {exc}",
        hint="Is the endpoint running? Start it with: memberpulse serve",
    )
