"""Unit tests of the pure verifier: both schemes, rotation, tolerance edges, the SDK's parsing quirks."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from whop_sdk.lib.verify_webhook import unwrap

from memberpulse.landing.verify import (
    SignatureRejected,
    VerifiedWebhook,
    secret_keys,
    sign_legacy,
    sign_standard,
    verify_webhook,
)

SECRET = "ws_4f1d8c2b9e7a"
OTHER = "ws_second_secret"
NOW = 1_790_000_000
BODY = b'{"type":"membership.activated","data":{"id":"mem_1"}}'
KEYS = secret_keys([SECRET])


def standard(body: bytes = BODY, *, secret: str = SECRET, msg_id: str = "msg_1", ts: int | str = NOW) -> dict[str, str]:
    signature = sign_standard(body, secret=secret, webhook_id=msg_id, timestamp=int(float(ts)))
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def sdk_accepts(body: bytes, headers: dict[str, str], secret: str = SECRET) -> bool:
    """The SDK checks against the real clock, so only use it with timestamps near now."""
    try:
        unwrap(body, headers=headers, key=secret)
    except Exception:
        return False
    return True


def test_genuine_standard_webhook_is_accepted() -> None:
    result = verify_webhook(BODY, standard(), keys=KEYS, now=NOW)
    assert result == VerifiedWebhook(scheme="standard", webhook_id="msg_1", signed_at=NOW)


def test_key_is_the_literal_secret_bytes_like_the_sdk() -> None:
    import time

    now = int(time.time())
    headers = standard(ts=now)
    assert sdk_accepts(BODY, headers)
    assert verify_webhook(BODY, headers, keys=KEYS, now=now).signed_at == now
    # What a base64-decoding verifier would want (the common mistake) is not what Whop sends.
    wrong = hmac.new(base64.b64decode(SECRET + "=="), f"msg_1.{now}.".encode() + BODY, hashlib.sha256)
    forged = {**headers, "webhook-signature": "v1," + base64.b64encode(wrong.digest()).decode()}
    assert not sdk_accepts(BODY, forged)
    with pytest.raises(SignatureRejected, match="no matching signature"):
        verify_webhook(BODY, forged, keys=KEYS, now=now)


def test_any_configured_secret_may_match_during_rotation() -> None:
    headers = standard(secret=OTHER)
    with pytest.raises(SignatureRejected):
        verify_webhook(BODY, headers, keys=KEYS, now=NOW)
    assert verify_webhook(BODY, headers, keys=secret_keys([SECRET, OTHER]), now=NOW).webhook_id == "msg_1"


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-300, True), (-301, False), (300, True), (301, False), (0, True), (-86_400, False), (86_400, False)],
)
def test_tolerance_is_300_seconds_either_way(offset: int, accepted: bool) -> None:
    headers = standard(ts=NOW + offset)
    if accepted:
        assert verify_webhook(BODY, headers, keys=KEYS, now=NOW).signed_at == NOW + offset
    else:
        with pytest.raises(SignatureRejected, match=r"too (old|new)"):
            verify_webhook(BODY, headers, keys=KEYS, now=NOW)


def test_tolerance_comes_from_the_caller() -> None:
    headers = standard(ts=NOW - 100)
    with pytest.raises(SignatureRejected):
        verify_webhook(BODY, headers, keys=KEYS, now=NOW, tolerance_seconds=60)


def test_fractional_timestamp_signs_as_its_floor_like_the_sdk() -> None:
    signature = sign_standard(BODY, secret=SECRET, webhook_id="msg_1", timestamp=NOW)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": f"{NOW}.75", "webhook-signature": signature}
    assert verify_webhook(BODY, headers, keys=KEYS, now=NOW).signed_at == NOW


@pytest.mark.parametrize("stamp", ["", "soon", "nan", "inf", "1e30", "0x10", "-"])
def test_garbled_timestamps_are_rejected(stamp: str) -> None:
    headers = {**standard(), "webhook-timestamp": stamp}
    with pytest.raises(SignatureRejected):
        verify_webhook(BODY, headers, keys=KEYS, now=NOW)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_standard_header_is_required(missing: str) -> None:
    headers = standard()
    del headers[missing]
    with pytest.raises(SignatureRejected, match="missing"):
        verify_webhook(BODY, headers, keys=KEYS, now=NOW)
    headers[missing] = ""
    with pytest.raises(SignatureRejected, match="missing"):
        verify_webhook(BODY, headers, keys=KEYS, now=NOW)


def test_signature_list_is_matched_entry_by_entry_like_the_sdk() -> None:
    """Each space-separated entry is compared whole with ``v1,<base64>``: any entry matching accepts, entries of
    other shapes only fail to match (standardwebhooks 1.3, which whop-sdk's ``unwrap`` drives)."""
    good = standard()["webhook-signature"]
    bad = "v1," + base64.b64encode(b"x" * 32).decode()
    base = standard()

    def check(value: str) -> bool:
        try:
            verify_webhook(BODY, {**base, "webhook-signature": value}, keys=KEYS, now=NOW)
        except SignatureRejected:
            return False
        return True

    assert check(f"{bad} {good}")  # a later match accepts
    assert check(f"v2,whatever {good}")  # other versions do not match, the next entry still may
    assert check(f"{good} garbage")
    assert check(f"garbage {good}")  # a malformed entry is only a non-match
    assert check(f"{bad}  {good}")  # a double space is an empty entry, a non-match
    assert check(f"{good},x {good}")  # the divergence CI once found: a three-field entry, then the match
    assert not check(f"{good},x")  # three fields alone
    assert not check(good.rstrip("="))  # unpadded base64 is not the string the SDK computes
    assert not check("v1,!!!!")  # not base64
    assert not check(good.replace("v1,", "v2,"))  # right digest, wrong version
    assert not check(f"{bad} garbage v2,{good[3:]}")


def test_body_must_be_byte_identical() -> None:
    headers = standard()
    reserialized = b'{"type": "membership.activated", "data": {"id": "mem_1"}}'
    with pytest.raises(SignatureRejected):
        verify_webhook(reserialized, headers, keys=KEYS, now=NOW)


def test_no_secret_means_nothing_verifies() -> None:
    with pytest.raises(SignatureRejected, match="no webhook secret"):
        verify_webhook(BODY, standard(), keys=(), now=NOW)


def test_header_names_are_case_insensitive() -> None:
    headers = {name.upper(): value for name, value in standard().items()}
    assert verify_webhook(BODY, headers, keys=KEYS, now=NOW).webhook_id == "msg_1"
    assert verify_webhook(BODY, {"X-Whop-Signature": legacy()["x-whop-signature"]}, keys=KEYS, now=NOW)


def test_no_signature_headers_at_all() -> None:
    with pytest.raises(SignatureRejected, match="missing"):
        verify_webhook(BODY, {"content-type": "application/json"}, keys=KEYS, now=NOW)


# --- legacy x-whop-signature -------------------------------------------------------------------------------


def legacy(body: bytes = BODY, *, secret: str = SECRET, ts: int = NOW) -> dict[str, str]:
    return {"x-whop-signature": sign_legacy(body, secret=secret, timestamp=ts)}


def test_legacy_vector_matches_an_independent_hmac() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert legacy()["x-whop-signature"] == f"t={NOW},v1={expected}"


def test_genuine_legacy_webhook_is_accepted_and_keyed_by_body_hash() -> None:
    result = verify_webhook(BODY, legacy(), keys=KEYS, now=NOW)
    assert result == VerifiedWebhook("legacy", hashlib.sha256(BODY).hexdigest(), NOW)


def test_legacy_uppercase_hex_and_extra_fields() -> None:
    value = legacy()["x-whop-signature"]
    t, v1 = value.split(",")
    assert verify_webhook(BODY, {"x-whop-signature": f"{t},v1={v1[3:].upper()}"}, keys=KEYS, now=NOW).scheme == "legacy"
    assert verify_webhook(BODY, {"x-whop-signature": f"{t}, v0=abc, {v1}"}, keys=KEYS, now=NOW).scheme == "legacy"


@pytest.mark.parametrize(
    "header",
    [
        f"t={NOW},v1=",  # the `version !== "v1"` bypass: any v1= header passed
        f"t={NOW},v1=deadbeef",
        f"t={NOW},v1={'0' * 64}",
        f"t={NOW},v1",
        f"t={NOW}",
        "v1=" + "0" * 64,
        f"t={NOW},t={NOW},v1={'0' * 64}",
        f"t=abc,v1={'0' * 64}",
        f"t={NOW};v1={'0' * 64}",
        "",
    ],
)
def test_legacy_bypass_attempts_and_garbage_are_rejected(header: str) -> None:
    with pytest.raises(SignatureRejected):
        verify_webhook(BODY, {"x-whop-signature": header}, keys=KEYS, now=NOW)


def test_legacy_sha256_prefix_and_wrong_secret_are_rejected() -> None:
    digest = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    for header in (f"sha256={digest}", digest, legacy(secret=OTHER)["x-whop-signature"]):
        with pytest.raises(SignatureRejected):
            verify_webhook(BODY, {"x-whop-signature": header}, keys=KEYS, now=NOW)


def test_legacy_one_of_several_signatures_and_rotation() -> None:
    good = legacy(secret=OTHER)["x-whop-signature"].split(",")[1]
    header = f"t={NOW},v1={'0' * 64},{good}"
    assert verify_webhook(BODY, {"x-whop-signature": header}, keys=secret_keys([SECRET, OTHER]), now=NOW)


@pytest.mark.parametrize(("offset", "accepted"), [(-300, True), (-301, False), (300, True), (301, False)])
def test_legacy_tolerance(offset: int, accepted: bool) -> None:
    headers = legacy(ts=NOW + offset)
    if accepted:
        assert verify_webhook(BODY, headers, keys=KEYS, now=NOW).signed_at == NOW + offset
    else:
        with pytest.raises(SignatureRejected, match="tolerance"):
            verify_webhook(BODY, headers, keys=KEYS, now=NOW)


def test_standard_headers_win_over_legacy_without_fallback() -> None:
    # A broken Standard Webhooks signature is not rescued by a valid legacy one (no scheme shopping).
    headers = {**legacy(), "webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": "v1,AAAA"}
    with pytest.raises(SignatureRejected):
        verify_webhook(BODY, headers, keys=KEYS, now=NOW)


def test_rejection_reasons_never_contain_the_secret() -> None:
    cases = [standard(secret=OTHER), {**standard(), "webhook-signature": "x"}, legacy(secret=OTHER), {}]
    for headers in cases:
        with pytest.raises(SignatureRejected) as caught:
            verify_webhook(BODY, headers, keys=KEYS, now=NOW)
        assert SECRET not in str(caught.value) and OTHER not in str(caught.value)
