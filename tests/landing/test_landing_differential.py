"""Differential test: the endpoint accepts (200) exactly the requests ``whop_sdk``'s ``unwrap`` accepts.

Hypothesis builds genuine, forged, re-serialized, stale, future-dated, multi-signature and malformed
Standard Webhooks requests; each goes over real HTTP to a real server configured with two secrets (rotation),
and the oracle is ``unwrap(body, headers=…, key=secret)`` for either secret. The oracle sees what the server
sees: header values without surrounding whitespace (HTTP strips it), names in any case.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from math import floor
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from whop_sdk.lib.verify_webhook import unwrap

from memberpulse.landing.mock_events import MockMember, encode, mock_event, new_webhook_id
from memberpulse.landing.verify import sign_standard
from tests.support.landing_testkit import OTHER_SECRET, SECRET, RunningServer, make_settings, running_server

pytestmark = pytest.mark.slow  # the landing served by uvicorn on 127.0.0.1

SERVER_SECRETS = (SECRET, OTHER_SECRET)
HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=24,
).filter(lambda s: all(not (0x7F <= ord(c) < 0xA0) for c in s))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data = tmp_path_factory.mktemp("differential")
    with running_server(make_settings(Path(data), WHOP_WEBHOOK_SECRET=",".join(SERVER_SECRETS))) as srv:
        yield srv


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def oracle_accepts(body: bytes, headers: dict[str, str]) -> bool:
    """Accepted when ``unwrap`` accepts with any of the server's secrets (rotation)."""
    return any(sdk_accepts(body, headers, key) for key in SERVER_SECRETS)


def sdk_accepts(body: bytes, headers: dict[str, str], key: str) -> bool:
    try:
        unwrap(body, headers=headers, key=key)
    except Exception:  # WebhookVerificationError, ValueError, JSONDecodeError: all mean "rejected"
        return False
    return True


json_leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["event", "event", "object", "array", "scalar", "bytes", "bom", "nan", "pretty"]))
    if kind in ("event", "pretty", "bom"):
        event = draw(st.sampled_from(["membership.went_valid", "membership.accessed", "membership.activated"]))
        member = MockMember(membership_id=f"mem_{draw(st.integers(0, 10**6))}", email="a@example.com")
        body = encode(mock_event(event, member), pretty=kind == "pretty")
        return b"\xef\xbb\xbf" + body if kind == "bom" else body
    if kind == "object":
        value = draw(st.dictionaries(st.text(max_size=6), json_values, max_size=4))
        return json.dumps(value, ensure_ascii=draw(st.booleans())).encode()
    if kind == "array":
        return json.dumps(draw(st.lists(json_values, max_size=3))).encode()
    if kind == "scalar":
        return json.dumps(draw(json_leaves)).encode()
    if kind == "nan":
        return b'{"type": "membership.accessed", "score": NaN}'
    return draw(st.binary(max_size=40))


def timestamp_text(ts: int, form: str) -> str:
    return {
        "int": str(ts),
        "fraction": f"{ts}.{abs(ts) % 97}",
        "underscore": f"{ts:_}",
        "plus": f"+{ts}",
        "exponent": f"{ts:.9e}",
        "garbage": f"{ts}s",
        "hex": hex(ts),
    }[form]


def signed_second(text: str) -> int | None:
    """The second the SDK signs for a timestamp header (it parses with float(), then floors)."""
    try:
        return floor(datetime.fromtimestamp(float(text), tz=UTC).timestamp())
    except (ValueError, OverflowError, OSError):
        return None


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, str]]]:
    now = int(time.time())
    body = draw(bodies())
    # sampled_from keeps the mix balanced (Hypothesis would otherwise favour edge cases: empty ids, far times).
    if draw(st.sampled_from(["fresh", "fresh", "fresh", "text"])) == "fresh":
        msg_id = new_webhook_id()
    else:
        msg_id = draw(HEADER_TEXT.map(str.strip))
    # Stay clear of the ±300 s edges: the oracle runs a moment after the server, on its own clock.
    when = draw(st.sampled_from(["window"] * 5 + ["old", "new"]))
    offset = draw(
        {"window": st.integers(-290, 290), "old": st.integers(-(10**7), -310), "new": st.integers(310, 10**7)}[when]
    )
    ts_text = timestamp_text(
        now + offset,
        draw(st.sampled_from(["int"] * 6 + ["fraction", "underscore", "plus", "exponent", "garbage", "hex"])),
    )
    second = signed_second(ts_text)

    def signature(secret: str, signed_body: bytes, signed_id: str, at: int | None) -> str:
        try:
            return sign_standard(signed_body, secret=secret, webhook_id=signed_id, timestamp=at or now)
        except UnicodeEncodeError:
            return "v1,AAAA"

    entry_kinds = st.sampled_from(
        [
            "genuine",
            "genuine",
            "genuine",
            "other_secret",
            "other_secret",
            "wrong_secret",
            "forged",
            "reserialized",
            "other_id",
            "other_version",
            "malformed",
            "empty",
            "three_fields",
            "not_base64",
            "unpadded",
        ]
    )
    entries = []
    for kind in draw(st.lists(entry_kinds, min_size=1, max_size=4)):
        good = signature(SECRET, body, msg_id, second)
        entry = {
            "genuine": good,
            "other_secret": signature(OTHER_SECRET, body, msg_id, second),
            "wrong_secret": signature("ws_someone_else", body, msg_id, second),
            "forged": "v1," + base64.b64encode(draw(st.binary(min_size=32, max_size=32))).decode(),
            "reserialized": signature(SECRET, _reserialize(body), msg_id, second),
            "other_id": signature(SECRET, body, msg_id + "x", second),
            "other_version": "v2," + good[3:],
            "malformed": draw(HEADER_TEXT.filter(lambda s: "," not in s and " " not in s)),
            "empty": "",
            "three_fields": good + ",x",
            "not_base64": "v1,***" + good[6:],
            "unpadded": good.rstrip("="),
        }[kind]
        entries.append(entry)
    signature_header = " ".join(entries).strip(" ")

    headers = {"webhook-id": msg_id, "webhook-timestamp": ts_text, "webhook-signature": signature_header}
    for name in draw(st.sets(st.sampled_from(sorted(headers)), max_size=3)) if draw(st.integers(0, 9)) == 0 else ():
        del headers[name]
    cased = []
    for name, value in headers.items():
        if draw(st.booleans()):
            name = "".join(c.upper() if draw(st.booleans()) else c for c in name)
        cased.append((name, value.strip(" \t")))
    return body, cased


def _reserialize(body: bytes) -> bytes:
    try:
        return json.dumps(json.loads(body), indent=2).encode()
    except Exception:
        return body + b" "


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(delivery=deliveries())
def test_endpoint_accepts_exactly_what_the_sdk_accepts(
    server: RunningServer, client: httpx.Client, delivery: tuple[bytes, list[tuple[str, str]]]
) -> None:
    body, headers = delivery
    wire = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    response = client.post(server.url, content=body, headers=wire)
    assert response.status_code in (200, 400, 403), response.text
    expected = oracle_accepts(body, dict(headers))
    event(f"status {response.status_code}")
    assert (response.status_code == 200) == expected, (response.status_code, response.text, headers)


@pytest.mark.parametrize(
    "shape",
    ["{good},x {good}", "garbage {good}", "{bad}  {good}", "{good},x", "{unpadded}", "v2,{digest} {bad}"],
)
def test_signature_lists_once_found_to_diverge_agree(server: RunningServer, client: httpx.Client, shape: str) -> None:
    """Shapes a random search once found (or could find) where the landing and the SDK disagreed, kept fixed."""
    now = int(time.time())
    body, msg_id = encode(mock_event("membership.accessed")), new_webhook_id()
    good = sign_standard(body, secret=SECRET, webhook_id=msg_id, timestamp=now)
    bad = "v1," + base64.b64encode(b"x" * 32).decode()
    value = shape.format(good=good, bad=bad, unpadded=good.rstrip("="), digest=good[3:])
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(now), "webhook-signature": value}
    expected = oracle_accepts(body, headers)
    assert (client.post(server.url, content=body, headers=headers).status_code == 200) == expected


def test_the_corpus_reaches_both_decisions(server: RunningServer, client: httpx.Client) -> None:
    """Guard against a corpus that only ever rejects: genuine requests of each shape are accepted."""
    now = int(time.time())
    accepted = 0
    for form in ("int", "fraction", "underscore", "plus", "exponent"):
        body = encode(mock_event("membership.accessed"))
        text = timestamp_text(now, form)
        second = signed_second(text)
        assert second is not None
        msg_id = new_webhook_id()
        headers = {
            "Webhook-Id": msg_id,
            "WEBHOOK-TIMESTAMP": text,
            "webhook-signature": "v2,xyz "
            + sign_standard(body, secret=OTHER_SECRET, webhook_id=msg_id, timestamp=second),
        }
        assert oracle_accepts(body, headers)
        accepted += client.post(server.url, content=body, headers=headers).status_code == 200
    assert accepted == 5
