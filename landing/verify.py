"""Pure webhook signature verification: Standard Webhooks and Whop's legacy ``x-whop-signature``.

No I/O and no clock: the caller passes ``now`` (unix seconds). The Standard Webhooks half follows
``standardwebhooks.Webhook.verify`` as ``whop_sdk.lib.verify_webhook.unwrap`` drives it, decision for decision:

- the three headers are looked up case-insensitively; an empty value counts as missing;
- the timestamp is parsed with ``float()`` into a microsecond ``datetime`` and the *signed* timestamp is
  ``floor()`` of that, not the header text (so ``"1700000000.0"`` signs as ``1700000000``);
- ``webhook-signature`` is split on single spaces and each entry is compared, whole, with the
  ``v1,<base64>`` string of the expected HMAC (standardwebhooks 1.3): an entry of any other shape (three
  fields, unpadded base64, ``v2``) simply does not match, and the header is accepted when any entry matches;
- the HMAC-SHA256 key is the secret's literal UTF-8 bytes (the SDK passes ``base64(secret)`` to a library that
  base64-decodes it: the same bytes).

Several secrets (rotation) accept when any one of them would. Signatures are compared with
``hmac.compare_digest``; nothing short of a matching digest accepts (unlike the ``version !== "v1"`` bug).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from math import floor
from typing import Final, Literal

from memberpulse.settings import default_settings

Scheme = Literal["standard", "legacy"]
#: How far a signature's time may be from ``now`` unless the caller says (MEMBERPULSE_WEBHOOK_TOLERANCE_SECONDS).
DEFAULT_TOLERANCE_SECONDS: Final = default_settings().webhook_tolerance_seconds

STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
LEGACY_HEADER = "x-whop-signature"
_LEGACY_T = re.compile(r"[0-9]{1,12}")
_LEGACY_V1 = re.compile(r"[0-9a-fA-F]{64}")


class SignatureRejected(Exception):
    """The request is not a genuine, fresh webhook. ``reason`` is safe to show and log (no secret in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class VerifiedWebhook:
    """What a good signature proves: who sent it (``scheme``), which delivery (``webhook_id``), and when."""

    scheme: Scheme
    webhook_id: str
    signed_at: int


def secret_keys(secrets: Sequence[str]) -> tuple[bytes, ...]:
    """The HMAC keys for configured secrets: each secret's literal UTF-8 bytes, prefix (``ws_``) included."""
    return tuple(s.encode("utf-8") for s in secrets if s)


def verify_webhook(
    body: bytes,
    headers: Mapping[str, str],
    *,
    keys: Sequence[bytes],
    now: float,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
) -> VerifiedWebhook:
    """Verify ``body`` (the raw bytes as received) against its headers; raise :class:`SignatureRejected`.

    Header names are matched case-insensitively, as the SDK does (of two names differing only in case, the
    later wins, as in the SDK). The Standard Webhooks scheme is used when any of its headers is present, else
    the legacy one; there is no fallback from one to the other.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    return verify_lowercased(body, lowered, keys=keys, now=now, tolerance_seconds=tolerance_seconds)


def verify_lowercased(
    body: bytes,
    headers: Mapping[str, str],
    *,
    keys: Sequence[bytes],
    now: float,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
) -> VerifiedWebhook:
    """:func:`verify_webhook` for headers whose names are already lower-case (ASGI delivers them so)."""
    if not keys:
        raise SignatureRejected("no webhook secret configured")
    if any(name in headers for name in STANDARD_HEADERS):
        return _verify_standard(body, headers, keys, now, tolerance_seconds)
    legacy = headers.get(LEGACY_HEADER)
    if legacy is not None:
        return _verify_legacy(body, legacy, keys, now, tolerance_seconds)
    raise SignatureRejected("missing signature headers (webhook-id, webhook-timestamp, webhook-signature)")


def _verify_standard(
    body: bytes, headers: Mapping[str, str], keys: Sequence[bytes], now: float, tolerance: float
) -> VerifiedWebhook:
    msg_id = headers.get("webhook-id")
    msg_timestamp = headers.get("webhook-timestamp")
    msg_signature = headers.get("webhook-signature")
    if not (msg_id and msg_timestamp and msg_signature):
        raise SignatureRejected("missing required headers (webhook-id, webhook-timestamp, webhook-signature)")

    try:
        stamped = datetime.fromtimestamp(float(msg_timestamp), tz=UTC)
    except (ValueError, OverflowError, OSError):
        raise SignatureRejected("webhook-timestamp is not a unix time") from None
    now_at = datetime.fromtimestamp(now, tz=UTC)
    window = timedelta(seconds=tolerance)
    if stamped < now_at - window:
        raise SignatureRejected("webhook-timestamp too old")
    if stamped > now_at + window:
        raise SignatureRejected("webhook-timestamp too new")
    signed_at = floor(stamped.timestamp())

    try:
        signed_content = f"{msg_id}.{signed_at}.".encode() + body
    except UnicodeEncodeError:
        raise SignatureRejected("webhook-id is not encodable") from None
    # The SDK compares each space-separated entry, whole, with the ``v1,<base64>`` string it computes: an entry
    # that is not exactly such a string (three fields, unpadded or non-canonical base64, another version) only
    # fails to match, and a later entry may still match. Accepting still takes a full HMAC match.
    expected = [f"v1,{base64.b64encode(hmac.new(key, signed_content, hashlib.sha256).digest()).decode()}".encode()
                for key in keys]  # fmt: skip
    for entry in msg_signature.split(" "):
        candidate = entry.encode("utf-8", "surrogateescape")
        # Check every key (no early exit per key) so timing does not tell which secret matched.
        matched = False
        for digest in expected:
            matched |= hmac.compare_digest(digest, candidate)
        if matched:
            return VerifiedWebhook("standard", msg_id, signed_at)
    raise SignatureRejected("no matching signature found")


def _verify_legacy(body: bytes, header: str, keys: Sequence[bytes], now: float, tolerance: float) -> VerifiedWebhook:
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureRejected("malformed x-whop-signature (want 't=<unix>,v1=<hex>')")
        fields.setdefault(name, []).append(value)
    stamps = fields.get("t", [])
    signatures = fields.get("v1", [])
    if len(stamps) != 1 or not _LEGACY_T.fullmatch(stamps[0]) or not signatures:
        raise SignatureRejected("malformed x-whop-signature (want 't=<unix>,v1=<hex>')")
    signed_at = int(stamps[0])
    if abs(now - signed_at) > tolerance:
        raise SignatureRejected("x-whop-signature timestamp outside the tolerance window")
    signed_content = f"{signed_at}.".encode() + body
    expected = [hmac.new(key, signed_content, hashlib.sha256).digest() for key in keys]
    matched = False
    for signature in signatures:
        if not _LEGACY_V1.fullmatch(signature):
            raise SignatureRejected("malformed x-whop-signature v1 (want 64 hex digits)")
        candidate = bytes.fromhex(signature)
        for digest in expected:
            matched |= hmac.compare_digest(digest, candidate)
    if not matched:
        raise SignatureRejected("no matching signature found")
    return VerifiedWebhook("legacy", hashlib.sha256(body).hexdigest(), signed_at)


# --- signing (the mirror image; used by send-test, the demo and tests) -------------------------------------


def sign_standard(body: bytes, *, secret: str, webhook_id: str, timestamp: int) -> str:
    """The ``webhook-signature`` value Whop would send: ``v1,<base64 HMAC-SHA256>``."""
    mac = hmac.new(secret.encode("utf-8"), f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def sign_legacy(body: bytes, *, secret: str, timestamp: int) -> str:
    """The legacy ``x-whop-signature`` value: ``t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}">``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"
