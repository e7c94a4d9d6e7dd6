"""The HTTP contract of the landing endpoint, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from memberpulse.errors import ConfigError
from memberpulse.landing.app import create_app
from memberpulse.landing.mock_events import (
    MockMember,
    encode,
    legacy_headers,
    mock_event,
    signed_delivery,
    standard_headers,
)
from tests.support.landing_testkit import (
    OTHER_SECRET,
    SECRET,
    RunningServer,
    make_settings,
    quarantined,
    read_records,
    rotated_bytes,
    running_server,
    snapshot_tree,
)

pytestmark = pytest.mark.slow  # the landing served by uvicorn on 127.0.0.1


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(make_settings(tmp_path / "data", WHOP_WEBHOOK_SECRET=f"{SECRET},{OTHER_SECRET}")) as srv:
        yield srv


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def test_health_answer_is_the_guides(server: RunningServer, client: httpx.Client) -> None:
    response = client.get(server.url)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["webhook_endpoint"] == "/api/webhooks/whop"
    assert {"membership.went_valid", "membership.accessed", "membership.went_invalid"} <= set(body["supported_events"])


def test_verified_webhook_is_stored_raw_before_the_200(server: RunningServer, client: httpx.Client) -> None:
    payload = mock_event("membership.activated", MockMember(membership_id="mem_a1"))
    body = encode(payload, pretty=True)  # odd whitespace: stored byte for byte, not re-serialized
    headers = standard_headers(body, secret=SECRET, webhook_id="msg_stored_1")
    before = time.time()
    response = client.post(server.url, content=body, headers=headers)
    assert response.status_code == 200
    answer = response.json()
    assert answer["received"] is True and answer["event"] == "membership.activated"
    assert isinstance(answer["duration_ms"], int) and answer["duration_ms"] >= 0

    (record,) = read_records(server.settings.landing_dir)  # on disk by the time the 200 arrived
    assert record["webhook_id"] == "msg_stored_1"
    assert record["scheme"] == "standard"
    assert record["event_type"] == "membership.activated"
    assert record["signed_at"] == int(headers["webhook-timestamp"])
    assert record["body"].encode() == body
    received = datetime.fromisoformat(record["received_at"])
    assert received.tzinfo is not None and before - 1 <= received.timestamp() <= time.time() + 1
    (segment,) = server.settings.landing_dir.rglob("*.ndjson")
    assert segment.parent.name == f"dt={received.date().isoformat()}"


def test_rotated_secret_and_legacy_scheme_are_accepted(server: RunningServer, client: httpx.Client) -> None:
    body, headers = signed_delivery(mock_event("membership.went_valid"), secret=OTHER_SECRET)
    assert client.post(server.url, content=body, headers=headers).status_code == 200
    legacy_body = encode(mock_event("membership.went_invalid"))
    response = client.post(server.url, content=legacy_body, headers=legacy_headers(legacy_body, secret=SECRET))
    assert response.status_code == 200 and response.json()["event"] == "membership.went_invalid"
    records = read_records(server.settings.landing_dir)
    assert [r["scheme"] for r in records] == ["standard", "legacy"]
    assert records[1]["webhook_id"] == hashlib.sha256(legacy_body).hexdigest()


def test_duplicate_webhook_id_gets_200_and_is_stored_once(server: RunningServer, client: httpx.Client) -> None:
    body, headers = signed_delivery(mock_event("membership.accessed"), secret=SECRET)
    answers = [client.post(server.url, content=body, headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all(a.json()["event"] == "membership.accessed" for a in answers)
    assert len(read_records(server.settings.landing_dir)) == 1


def _bad_inputs(limit: int) -> list[tuple[str, int, bytes, list[tuple[str, str]] | dict[str, str], str]]:
    now = int(time.time())
    body, good = signed_delivery(mock_event("membership.went_valid"), secret=SECRET)
    forged = {**good, "webhook-signature": "v1," + "A" * 43 + "="}
    legacy_body = encode(mock_event("membership.went_invalid"))
    big = b'{"pad":"' + b"x" * limit + b'"}'

    def signed(raw: bytes) -> dict[str, str]:
        return standard_headers(raw, secret=SECRET)

    return [
        ("no signature headers", 403, body, {"content-type": "application/json"}, "POST"),
        ("forged signature", 403, body, forged, "POST"),
        ("wrong secret", 403, body, standard_headers(body, secret="ws_not_ours"), "POST"),
        ("re-serialized body", 403, json.dumps(json.loads(body), indent=1).encode(), good, "POST"),
        ("stale timestamp", 403, body, standard_headers(body, secret=SECRET, timestamp=now - 400), "POST"),
        ("future timestamp", 403, body, standard_headers(body, secret=SECRET, timestamp=now + 400), "POST"),
        ("garbled signature header", 403, body, {**good, "webhook-signature": "sha256=abc"}, "POST"),
        ("garbled timestamp", 403, body, {**good, "webhook-timestamp": "yesterday"}, "POST"),
        ("empty webhook-id", 403, body, {**good, "webhook-id": ""}, "POST"),
        ("legacy v1= bypass", 403, legacy_body, {"x-whop-signature": f"t={now},v1="}, "POST"),
        ("legacy forged", 403, legacy_body, {"x-whop-signature": f"t={now},v1={'ab' * 32}"}, "POST"),
        ("over the limit", 413, big, signed(big), "POST"),
        ("signed but not JSON", 400, b"hello", signed(b"hello"), "POST"),
        ("signed JSON array", 400, b"[1,2]", signed(b"[1,2]"), "POST"),
        ("signed invalid UTF-8", 400, b'{"a":"\xff"}', signed(b'{"a":"\xff"}'), "POST"),
        ("PUT", 405, body, good, "PUT"),
        ("DELETE", 405, b"", {}, "DELETE"),
        ("PATCH", 405, body, good, "PATCH"),
    ]


def test_bad_inputs_get_their_status_and_leave_the_raw_store_untouched(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", MEMBERPULSE_MAX_BODY_BYTES=4096)
    with running_server(settings) as server, httpx.Client(timeout=10) as client:
        # One good webhook first, so "untouched" means byte-identical rather than "still empty".
        body, headers = signed_delivery(mock_event("membership.went_valid"), secret=SECRET)
        assert client.post(server.url, content=body, headers=headers).status_code == 200
        before = snapshot_tree(settings.landing_dir)
        cases = _bad_inputs(4096)
        for name, status, raw, hdrs, method in cases:
            response = client.request(method, server.url, content=raw, headers=hdrs)
            assert response.status_code == status, (name, response.text)
            error = response.json()
            assert isinstance(error["error"], str) and error["error"], name
            if status == 405:
                assert response.headers["allow"] == "GET, HEAD, POST"
        assert snapshot_tree(settings.landing_dir) == before
        metrics = client.get(server.base + "/metrics").text

    entries = quarantined(settings.quarantine_dir)
    assert [q["status"] for q in entries] == [c[1] for c in cases]
    # A 405 is answered without reading the body; everything else records the body's size.
    assert [q["body_bytes"] for q in entries] == [0 if c[1] == 405 else len(c[2]) for c in cases]
    quarantine_text = json.dumps(entries)
    assert SECRET not in quarantine_text and "webhook-signature" not in [h for q in entries for h in q["headers"]]
    assert 'outcome="bad_signature"} 11' in metrics
    assert 'outcome="too_large"} 1' in metrics and 'outcome="bad_body"} 3' in metrics
    assert 'outcome="method_not_allowed"} 3' in metrics and 'outcome="stored"} 1' in metrics


def test_content_length_over_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", MEMBERPULSE_MAX_BODY_BYTES=1000)
    with running_server(settings) as server, httpx.Client(timeout=10) as client:
        big = b'{"a":"' + b"y" * 5000 + b'"}'

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked, counted as it streams
            for start in range(0, len(big), 512):
                yield big[start : start + 512]

        streamed = client.post(server.url, content=chunks(), headers=standard_headers(big, secret=SECRET))
        assert streamed.status_code == 413
        declared = client.post(server.url, content=big, headers=standard_headers(big, secret=SECRET))
        assert declared.status_code == 413 and declared.json()["error"] == "payload too large"
        # Exactly at the limit is fine.
        body = b'{"a":"' + b"z" * (1000 - 8) + b'"}'
        assert len(body) == 1000
        assert client.post(server.url, content=body, headers=standard_headers(body, secret=SECRET)).status_code == 200
    assert len(read_records(settings.landing_dir)) == 1


def test_quarantine_is_capped_and_keeps_at_most_4_kib_of_a_body(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", MEMBERPULSE_QUARANTINE_MAX_BYTES=20_000)
    with running_server(settings) as server, httpx.Client(timeout=10) as client:
        body = b'{"blob":"' + b"q" * 50_000 + b'"}'
        for n in range(10):
            assert client.post(server.url, content=body, headers={"webhook-id": f"x{n}"}).status_code == 403
        metrics = client.get(server.base + "/metrics").text
    assert 0 < rotated_bytes(settings.quarantine_dir) <= 20_000
    entries = quarantined(settings.quarantine_dir)
    assert all(len(e["body_prefix"]) == 4096 and e["body_bytes"] == len(body) for e in entries)
    # Past the cap the oldest entries made room: the first (the first of its reason) and the newest are kept.
    assert {"x0", "x9"} <= {e["headers"]["webhook-id"] for e in entries} and len(entries) < 10
    assert 'result="kept"} 10' in metrics and 'result="dropped"} 0' in metrics
    assert 'landing_refusals_total{host="' in metrics and 'reason="403 missing required headers' in metrics


def test_storage_failure_answers_503_and_acknowledges_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "landing").write_text("a file where the landing directory should be")  # a real ENOTDIR/EEXIST
    settings = make_settings(data)
    with running_server(settings) as server, httpx.Client(timeout=10) as client:
        body, headers = signed_delivery(mock_event("membership.went_valid"), secret=SECRET)
        first = client.post(server.url, content=body, headers=headers)
        assert first.status_code == 503 and first.json()["error"].startswith("storage unavailable")
        again = client.post(server.url, content=body, headers=headers)  # not remembered as stored
        assert again.status_code == 503
        (data / "landing").unlink()  # the disk "heals"; Whop's retry is stored
        retry = client.post(server.url, content=body, headers=headers)
        assert retry.status_code == 200
        metrics = client.get(server.base + "/metrics").text
    assert [r["webhook_id"] for r in read_records(settings.landing_dir)] == [headers["webhook-id"]]
    assert 'outcome="storage_unavailable"} 2' in metrics


def test_metrics_expose_outcomes_latency_and_fsync_batches(server: RunningServer, client: httpx.Client) -> None:
    for n in range(3):
        body, headers = signed_delivery(
            mock_event("membership.accessed", MockMember(membership_id=f"m{n}")), secret=SECRET
        )
        assert client.post(server.url, content=body, headers=headers).status_code == 200
    response = client.get(server.base + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'outcome="stored"} 3' in text
    assert "landing_webhook_request_seconds_count" in text and "landing_fsync_batch_records_bucket" in text
    count = [line for line in text.splitlines() if line.startswith("landing_fsync_batch_records_sum")]
    assert count and float(count[0].rsplit(" ", 1)[1]) == 3.0


def test_the_app_refuses_to_exist_without_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        create_app(make_settings(tmp_path, WHOP_WEBHOOK_SECRET=None))
    assert caught.value.variable == "WHOP_WEBHOOK_SECRET"


def test_logs_are_guide_style_without_secrets_or_bodies(
    server: RunningServer, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="landing")
    logger = logging.getLogger("landing")
    propagate, logger.propagate = logger.propagate, True  # serve() turns it off; caplog listens at the root
    try:
        payload = mock_event("membership.accessed", MockMember(email="private@example.com"))
        body, headers = signed_delivery(payload, secret=SECRET)
        assert client.post(server.url, content=body, headers=headers).status_code == 200
        assert client.post(server.url, content=body, headers={}).status_code == 403
        time.sleep(0.1)
    finally:
        logger.propagate = propagate
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "[Webhook] Validated webhook: membership.accessed" in text
    assert "[Webhook] Processed in " in text and "ms" in text
    assert SECRET not in text and OTHER_SECRET not in text and "private@example.com" not in text
