"""Payload fixtures for every Whop payload shape (and those of the TypeScript webhook guide this project started
from), good and malformed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest

from memberpulse import transforms

RECEIVED = "2026-02-01T12:00:05.250000Z"
SIGNED = 1769947203  # 2026-02-01T12:00:03Z


def record(
    body: str | dict[str, Any] | list[Any] | None,
    *,
    webhook_id: str = "wh_1",
    signed_at: int | None = SIGNED,
    received_at: str = RECEIVED,
) -> dict[str, Any]:
    text = body if isinstance(body, str) or body is None else json.dumps(body)
    return {
        "webhook_id": webhook_id,
        "received_at": received_at,
        "signed_at": signed_at,
        "scheme": "standard",
        "event_type": None,
        "body": text,
    }


def parse(*records: dict[str, Any]) -> transforms.ParsedBatch:
    return transforms.parse_raw(pl.DataFrame(list(records), schema=transforms.RAW_SCHEMA))


def one_event(body: Any, **kw: Any) -> dict[str, Any]:
    batch = parse(record(body, **kw))
    assert batch.rejects.height == 0, batch.rejects.to_dicts()
    assert batch.events.height == 1
    return batch.events.row(0, named=True)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- the guide's shapes (its README's examples, verbatim) ------------------------------------------------

SEED_JOINED = {
    "action": "membership.went_valid",
    "data": {
        "id": "membership_xxx",
        "user_id": "user_xxx",
        "company_id": "biz_xxx",
        "email": "member@example.com",
        "username": "membername",
        "created_at": "2025-10-21T10:00:00Z",
    },
}
SEED_ACCESSED = {
    "action": "membership.accessed",
    "data": {
        "id": "membership_xxx",
        "user_id": "user_xxx",
        "company_id": "biz_xxx",
        "accessed_at": "2025-10-21T10:00:00Z",
    },
}
SEED_LEFT = {
    "action": "membership.went_invalid",
    "data": {
        "id": "membership_xxx",
        "user_id": "user_xxx",
        "company_id": "biz_xxx",
        "expired_at": "2025-10-21T10:00:00Z",
    },
}


@pytest.mark.parametrize(("body", "kind"), [(SEED_JOINED, "joined"), (SEED_ACCESSED, "accessed"), (SEED_LEFT, "left")])
def test_guide_payloads(body: dict[str, Any], kind: str) -> None:
    ev = one_event(body)
    assert ev["kind"] == kind
    assert ev["event_type"] == body["action"]
    assert ev["event_at"] == utc(2025, 10, 21, 10)
    assert (ev["membership_id"], ev["user_id"], ev["company_id"]) == ("membership_xxx", "user_xxx", "biz_xxx")
    if kind == "joined":
        assert (ev["username"], ev["member_name"], ev["email"]) == ("membername", "membername", "member@example.com")
    assert ev["received_at"] == utc(2026, 2, 1, 12, 0, 5, 250000)
    assert ev["signed_at"] == SIGNED


# --- Whop legacy v5 -----------------------------------------------------------------------------------


def v5(action: str, **data: Any) -> dict[str, Any]:
    base = {
        "id": "mem_v5",
        "product_id": "prod_1",
        "user_id": "user_v5",
        "plan_id": "plan_1",
        "created_at": 1767225600,
        "expires_at": 1769904000,
        "renewal_period_start": 1767225600,
        "renewal_period_end": 1769904000,
        "status": "active",
        "valid": True,
        "cancel_at_period_end": False,
        "metadata": {"tier": ["gold"]},
        "manage_url": "https://whop.com/orders/mem_v5/manage",
    }
    return {"action": action, "api_version": "v5", "data": {**base, **data}}


def test_v5_went_valid_uses_epoch_created_at() -> None:
    ev = one_event(v5("membership.went_valid"))
    assert ev["kind"] == "joined"
    assert ev["event_at"] == utc(2026, 1, 1)
    assert (ev["membership_id"], ev["user_id"], ev["membership_status"]) == ("mem_v5", "user_v5", "active")
    assert ev["company_id"] is None


def test_v5_went_invalid_without_expired_at_falls_back_to_signed_at() -> None:
    ev = one_event(v5("membership.went_invalid", status="expired", valid=False))
    assert ev["kind"] == "left"
    assert ev["event_at"] == utc(2026, 2, 1, 12, 0, 3)  # not the membership's expires_at
    assert ev["membership_status"] == "expired"


def test_v5_fractional_epoch_is_exact() -> None:
    ev = one_event(v5("membership.went_valid", created_at=1767225600.25))
    assert ev["event_at"] == utc(2026, 1, 1, 0, 0, 0, 250000)


# --- Whop v1 (pinned and unpinned) ---------------------------------------------------------------------


def v1(type_: str, data: dict[str, Any], timestamp: str | None = "2026-01-15T08:30:00.123Z") -> dict[str, Any]:
    env: dict[str, Any] = {
        "id": "msg_1",
        "api_version": "v1",
        "api_version_date": "2025-06-01",
        "type": type_,
        "data": data,
        "account_id": "biz_acct",
    }
    if timestamp is not None:
        env["timestamp"] = timestamp
    return env


UNPINNED = {
    "id": "mem_v1",
    "status": "active",
    "created_at": "2025-12-01T00:00:00Z",
    "renewal_period_start": None,
    "cancel_at_period_end": False,
    "company": {"id": "biz_v1", "title": "Co"},
    "user": {"id": "user_v1", "username": "ann", "name": "Ann Lee", "email": "ann@example.com"},
    "product": {"id": "prod_1"},
}
PINNED = {
    "id": "mem_v1p",
    "user_id": "user_p",
    "member_id": "mber_p",
    "product_id": "prod_1",
    "company_id": "biz_p",
    "status": "trialing",
    "created_at": "2025-12-01T00:00:00+00:00",
    "current_period_start": None,
    "updated_at": "2026-01-15T08:30:00Z",
}


def test_v1_unpinned_activated() -> None:
    ev = one_event(v1("membership.activated", UNPINNED))
    assert ev["kind"] == "joined"
    assert ev["event_at"] == utc(2026, 1, 15, 8, 30, 0, 123000)  # the envelope's timestamp
    assert (ev["membership_id"], ev["user_id"], ev["company_id"]) == ("mem_v1", "user_v1", "biz_v1")
    assert (ev["username"], ev["member_name"], ev["email"]) == ("ann", "Ann Lee", "ann@example.com")
    assert ev["membership_status"] == "active"


def test_v1_deactivated_event_time_is_not_the_old_created_at() -> None:
    ev = one_event(v1("membership.deactivated", {**UNPINNED, "status": "canceled"}))
    assert ev["kind"] == "left"
    assert ev["event_at"] == utc(2026, 1, 15, 8, 30, 0, 123000)
    assert ev["membership_status"] == "canceled"


def test_v1_pinned() -> None:
    ev = one_event(v1("membership.activated", PINNED, timestamp="2026-01-15T10:30:00+02:00"))
    assert ev["event_at"] == utc(2026, 1, 15, 8, 30)
    assert (ev["membership_id"], ev["user_id"], ev["company_id"]) == ("mem_v1p", "user_p", "biz_p")
    assert ev["member_name"] is None and ev["email"] is None
    assert ev["membership_status"] == "trialing"


def test_v1_company_falls_back_to_account_id() -> None:
    data = {k: v for k, v in PINNED.items() if k != "company_id"}
    assert one_event(v1("membership.activated", data))["company_id"] == "biz_acct"


def test_no_time_anywhere_falls_back_to_signed_at_then_received_at() -> None:
    body = {"action": "membership.accessed", "data": {"id": "m"}}
    assert one_event(body)["event_at"] == utc(2026, 2, 1, 12, 0, 3)
    assert one_event(body, signed_at=None)["event_at"] == utc(2026, 2, 1, 12, 0, 5, 250000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-02T03:04:05Z", utc(2026, 1, 2, 3, 4, 5)),
        ("2026-01-02T03:04:05.5z", utc(2026, 1, 2, 3, 4, 5, 500000)),
        ("2026-01-02T05:04:05+0200", utc(2026, 1, 2, 3, 4, 5)),
        ("2026-01-02T03:04:05.123456789Z", utc(2026, 1, 2, 3, 4, 5, 123456)),
        ("2026-01-02T03:04:05", utc(2026, 1, 2, 3, 4, 5)),
        ("1767322800", utc(2026, 1, 2, 3)),
        (1767322800, utc(2026, 1, 2, 3)),
        (1767322800.000001, utc(2026, 1, 2, 3, 0, 0, 1)),
    ],
)
def test_time_encodings(text: Any, expected: datetime) -> None:
    ev = one_event({"action": "membership.accessed", "data": {"id": "m", "accessed_at": text}})
    assert ev["event_at"] == expected


# --- unknown events: kept and counted -------------------------------------------------------------------


def test_unknown_events_are_kept_and_counted() -> None:
    batch = parse(
        record({"action": "payment.succeeded", "data": {"id": "pay_1"}}, webhook_id="a"),
        record(v1("member.created", {"id": "mber_1"}), webhook_id="b"),
        record(v1("membership.updated", UNPINNED), webhook_id="c"),
        record({"data": {"id": "x"}}, webhook_id="d"),
        record(SEED_JOINED, webhook_id="e"),
    )
    assert batch.rejects.height == 0
    assert batch.events.height == 5
    assert batch.unknown_events == 4
    assert batch.unknown_event_types() == {
        "payment.succeeded": 1,
        "member.created": 1,
        "membership.updated": 1,
        "(none)": 1,
    }
    assert set(transforms.SUPPORTED_EVENTS) == set(transforms.EVENT_KINDS)
    assert transforms.EVENT_KINDS["membership.deactivated"] == "left"


# --- malformed: rejects with reasons, nothing dropped ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"action": "membership.went_valid", "data": {', "body is not valid JSON"),
        ("not json at all", "body is not valid JSON"),
        ('{"a": 1} trailing', "body is not valid JSON"),
        ("[1, 2]", "body is not a JSON object"),
        ('"membership.went_valid"', "body is not a JSON object"),
        ("null", "body is not a JSON object"),
        ("42", "body is not a JSON object"),
        ("", "empty body"),
        ("   ", "empty body"),
        ({"action": "membership.went_valid", "data": {"user_id": "u"}}, "missing data.id"),
        ({"action": "membership.accessed", "data": {"id": ""}}, "missing data.id"),
        ({"action": "membership.went_invalid", "data": "mem_1"}, "missing data.id"),
        (
            {"action": "membership.went_valid", "data": {"id": "m", "created_at": "yesterday"}},
            "unparsable data.created_at: 'yesterday'",
        ),
        (
            {"action": "membership.accessed", "data": {"id": "m", "accessed_at": "2026-13-45T00:00:00Z"}},
            "unparsable data.accessed_at",
        ),
        (v1("membership.activated", UNPINNED, timestamp="soon"), "unparsable timestamp: 'soon'"),
    ],
)
def test_malformed_bodies_are_rejected_with_a_reason(body: Any, reason: str) -> None:
    good = record(SEED_ACCESSED, webhook_id="good")
    bad = record(body, webhook_id="bad")
    bad["source_file"], bad["source_offset"] = "dt=2026-02-01/w1.ndjson", 1234
    frame = pl.DataFrame(
        [good, bad], schema={**transforms.RAW_SCHEMA, "source_file": pl.Utf8, "source_offset": pl.Int64}
    )
    batch = transforms.parse_raw(frame)
    assert batch.events["webhook_id"].to_list() == ["good"]
    assert batch.rejects.schema == transforms.REJECT_SCHEMA
    rej = batch.rejects.row(0, named=True)
    assert batch.rejects.height == 1
    assert rej["reason"].startswith(reason)
    assert (rej["webhook_id"], rej["received_at"]) == ("bad", RECEIVED)
    assert (rej["source_file"], rej["source_offset"]) == ("dt=2026-02-01/w1.ndjson", 1234)
    assert rej["body"] == bad["body"]


def test_oddly_typed_fields_count_as_absent_not_as_errors() -> None:
    # data.user as a string, company as a list, status as an object: polars' typed decoder refuses the row,
    # the lenient path keeps the event with those fields missing.
    body = {
        "action": "membership.went_valid",
        "data": {
            "id": "m1",
            "user": "user_1",
            "company": ["x"],
            "status": {"x": 1},
            "created_at": "2026-01-01T00:00:00Z",
        },
    }
    batch = parse(record(SEED_JOINED, webhook_id="a"), record(body, webhook_id="b"))
    assert batch.rejects.height == 0
    ev = batch.events.filter(pl.col("webhook_id") == "b").row(0, named=True)
    assert (ev["membership_id"], ev["user_id"], ev["membership_status"]) == ("m1", None, None)
    assert ev["event_at"] == utc(2026, 1, 1)


def test_reject_body_is_cut_to_4_kib_without_splitting_characters() -> None:
    body = "{" + "é" * 5000
    rej = parse(record(body)).rejects.row(0, named=True)
    assert len(rej["body"].encode()) <= 4096
    assert body.startswith(rej["body"])


def test_many_rows_with_a_few_bad_ones_in_the_middle() -> None:
    rows = [record(SEED_ACCESSED, webhook_id=f"w{i}") for i in range(3000)]
    rows[1500] = record('{"broken', webhook_id="bad1")
    rows[17] = record({"action": "membership.accessed", "data": {"id": "m", "user": 5}}, webhook_id="odd")
    batch = parse(*rows)
    assert batch.events.height == 2999
    assert batch.rejects["webhook_id"].to_list() == ["bad1"]


# Bodies where DuckDB's JSON reader (yyjson) and polars' NDJSON reader could disagree: the fast path must give
# exactly the reader's result for each (see transforms._parse, "DuckDB's JSON extraction").
ODD_BODIES = [
    '{"action": "membership.went_valid", "data": {"id": "m", "created_at": "2026-01-01T00:00:00Z"},}',  # trailing ,
    '{"action": "membership.accessed", "data": {"id": "m", "accessed_at": NaN}}',
    '{"action": "membership.accessed", "data": {"id": "m", "accessed_at": -Infinity}}',
    '{"action": "membership.accessed", "data": {"id": "m", "accessed_at": inf}}',
    '{"action": "membership.accessed", "data": {"id": "m", "accessed_at": 1e400}}',
    '{"action": "membership.accessed", "data": {"id": "m", "accessed_at": 1.7672256e9}}',
    '{"action": "membership.accessed", "data": {"id": "m", "accessed_at": 1767225600.50}}',
    '{"action": "membership.accessed", "data": {"id": 12345678901234567890123, "accessed_at": 1767225600}}',
    '{"action": "membership.accessed", "data": {"id": -0, "accessed_at": 1767225600}}',
    '{"action": "membership.accessed", "data": {"id": 5, "accessed_at": 1767225600}}',
    '{"action": "membership.accessed", "data": {"id": true, "accessed_at": 1767225600}}',
    '{"action": "membership.accessed", "data": {"id": {"x": 1}, "status": [1, 2]}}',
    '{"action": "membership.accessed", "data": {"id": "m", "user": "u", "company": 3}}',
    '{"action": "membership.accessed", "data": "m"}',
    '{"action": "membership.accessed", "data": [1, 2, [3,]]}',
    '{"action": "membership.accessed", "data": {"id": "\\ud800", "email": "\\u00e9@x"}}',
    '{"action": "membership.accessed", "data": {"id": "a\tb"}}',
    '{"action": "membership.accessed", "data": {"id": "a\\u0000b", "username": "\\ud83d\\ude00 \\"q\\" \\\\"}}',
    '{"action": "membership.accessed", "action": "membership.went_valid", "data": {"id": "m", "id": "n"}}',
    '{"action": "membership.accessed", "data": {"id": "m"}} {"x": 1}',
    '{"action": "membership.accessed", "data": {"id": "{not an object", "username": "[x"}}',
    '{"action":"membership.accessed","data":{"id":"m","user":{"id":"u","name":null,"email":"e@x"}}}',
    '{"type": "membership.activated", "timestamp": "2026-01-01T00:00:00.123456789+02:00", "data": {"id": "m"}}',
]


def test_duckdb_fast_path_equals_the_polars_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    from memberpulse.transforms import _parse

    normal = [SEED_JOINED, SEED_ACCESSED, SEED_LEFT, v5("membership.went_valid"), v1("membership.activated", UNPINNED)]
    # Enough rows that a body DuckDB refuses is found by bisection, odd rows scattered among normal ones.
    bodies = [json.dumps(normal[i % len(normal)]) for i in range(240)]
    for i, odd in enumerate(ODD_BODIES):
        bodies[7 + 9 * i] = odd
    series = pl.Series("body", bodies)

    def one_by_one(bodies: pl.Series) -> pl.DataFrame:  # the reader's result for each body on its own,
        # except that a repeated key takes its last value (the reader takes the first)
        return pl.concat([_parse._last_key_wins(bodies[i : i + 1], _parse._decode_framed) for i in range(len(bodies))])

    assert _parse._decode_fast(series).equals(one_by_one(series))
    plain = pl.Series("body", [json.dumps(normal[i % len(normal)]) for i in range(50)])
    assert _parse._duckdb_extract(plain).drop("_dup").equals(_parse._decode_framed(plain).drop("_reason"))

    records = [record(b, webhook_id=f"w{i}") for i, b in enumerate(bodies)]
    fast = parse(*records)
    monkeypatch.setattr(_parse, "_decode_fast", one_by_one)
    exact = parse(*records)
    assert fast.events.equals(exact.events)
    assert fast.rejects.equals(exact.rejects)
    assert fast.rejects.height >= 5  # the bodies only yyjson accepts are still rejects


def test_raw_frame_must_have_the_required_columns() -> None:
    from memberpulse.errors import InvalidInput

    with pytest.raises(InvalidInput, match="webhook_id"):
        transforms.parse_raw(pl.DataFrame({"body": ["{}"]}))


# --- NDJSON lines ------------------------------------------------------------------------------------


def test_parse_ndjson_good_lines() -> None:
    lines = [json.dumps(record(SEED_JOINED, webhook_id=f"w{i}")) for i in range(3)]
    records, rejects = transforms.parse_ndjson(("\n".join(lines) + "\n").encode())
    assert rejects.height == 0
    assert records.schema == transforms.RAW_SCHEMA
    assert records["webhook_id"].to_list() == ["w0", "w1", "w2"]
    assert transforms.parse_raw(records).events.height == 3


def test_parse_ndjson_bad_lines_become_rejects_with_offsets() -> None:
    good = json.dumps(record(SEED_JOINED, webhook_id="ok")).encode()
    bad_lines = [
        b'{"webhook_id": "x", "received_at": ',
        b"[1, 2, 3]",
        json.dumps({"received_at": RECEIVED, "body": "{}"}).encode(),
        json.dumps({**record(SEED_JOINED, webhook_id="s"), "signed_at": "soon"}).encode(),
        b"\xff\xfe not utf-8",
    ]
    data = b"\n".join([good, b"", *bad_lines, good.replace(b'"ok"', b'"ok2"')]) + b"\n"
    out = transforms.parse_ndjson(data, source_file="dt=2026-02-01/a.ndjson", base_offset=100)
    assert out.records["webhook_id"].to_list() == ["ok", "ok2"]
    assert out.rejects.height == len(bad_lines)
    assert all(r.startswith("invalid raw record: ") for r in out.rejects["reason"].to_list())
    offsets = out.rejects["source_offset"].to_list()
    assert [data[o - 100 :].split(b"\n")[0] for o in offsets] == bad_lines
    assert set(out.rejects["source_file"].to_list()) == {"dt=2026-02-01/a.ndjson"}
    assert (
        out.rejects.filter(pl.col("webhook_id") == "s")["reason"].item()
        == "invalid raw record: signed_at is not an integer"
    )


def test_parse_ndjson_empty() -> None:
    records, rejects = transforms.parse_ndjson(b"")
    assert records.height == 0 and rejects.height == 0


# --- dedupe -------------------------------------------------------------------------------------------


def test_dedupe_keeps_one_per_webhook_id_ordered_by_event_time() -> None:
    def acc(t: str) -> dict[str, Any]:
        return {"action": "membership.accessed", "data": {"id": "m", "accessed_at": t}}

    batch = parse(
        record(acc("2026-01-03T00:00:00Z"), webhook_id="late", received_at="2026-01-04T00:00:00Z"),
        record(acc("2026-01-01T00:00:00Z"), webhook_id="early", received_at="2026-01-09T00:00:00Z"),
        record(acc("2026-01-01T00:00:00Z"), webhook_id="early", received_at="2026-01-08T00:00:00Z"),
        record(acc("2026-01-02T00:00:00Z"), webhook_id="mid"),
        record(acc("2026-01-01T00:00:00Z"), webhook_id="a_tie"),
    )
    events = transforms.dedupe_events(batch.events)
    assert events["webhook_id"].to_list() == ["a_tie", "early", "mid", "late"]
    assert events.filter(pl.col("webhook_id") == "early")["received_at"].item() == utc(2026, 1, 8)
    assert transforms.dedupe_events(None).schema == transforms.EVENT_SCHEMA


def test_pretty_printed_bodies_with_newlines() -> None:
    batch = parse(
        record(json.dumps(SEED_JOINED, indent=2), webhook_id="pretty"),
        record('{\n "action": "membership.accessed",\n "data": {"id": ', webhook_id="broken"),
        record(json.dumps({"action": "x", "data": {"user": "s"}}, indent=1), webhook_id="odd"),
        record(SEED_ACCESSED, webhook_id="plain"),
    )
    assert sorted(batch.events["webhook_id"].to_list()) == ["odd", "plain", "pretty"]
    assert batch.events.filter(pl.col("webhook_id") == "pretty")["member_name"].item() == "membername"
    assert batch.rejects["reason"].item().startswith("body is not valid JSON")


def test_time_source_says_where_the_event_time_came_from() -> None:
    body = {"action": "membership.went_invalid", "data": {"id": "m"}}
    assert one_event(v1("membership.activated", UNPINNED))["time_source"] == "envelope"
    assert one_event(SEED_LEFT)["time_source"] == "payload"
    assert one_event(body)["time_source"] == "signed_at"
    assert one_event(body, signed_at=None)["time_source"] == "received_at"


_REPEATED = (
    '{"action":"membership.went_valid","action":"membership.went_invalid","data":{"id":"mem_first",'
    '"user_id":"u","id":"mem_last","created_at":"2026-01-01T00:00:00Z","expired_at":"2026-01-02T00:00:00Z",'
    '"user":{"id":"u1","id":"u2"}}}'
)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_REPEATED, id="compact"),
        pytest.param(_REPEATED.replace(',"data"', ',\n"data"'), id="with-newline"),
        pytest.param(" " + _REPEATED, id="leading-space"),
    ],
)
def test_a_repeated_key_takes_its_last_value_as_json_loads_and_the_sdk_do(body: str) -> None:
    expected = json.loads(body)
    with_neighbours = [record(body, webhook_id="wh_dup")] + [record("{", webhook_id=f"wh_bad_{n}") for n in range(3)]
    batch = parse(*with_neighbours)
    (event,) = batch.events.to_dicts()
    assert event["membership_id"] == expected["data"]["id"] == "mem_last"
    assert event["event_type"] == expected["action"] == "membership.went_invalid"
    assert batch.rejects.height == 3


@pytest.mark.parametrize("odd", ["\\udfff", "\\ud800\\ud800", "\\udc00\\ud800", "x\\ud800y"])
def test_unpaired_surrogates_keep_the_event_and_read_as_nul(odd: str) -> None:
    """The landing accepts such a body (json.loads does); a reader that refuses it must not cost the member
    its event: each unpaired surrogate reads as NUL, which is stored as U+FFFD like any NUL."""
    body = (
        '{"action": "membership.went_valid", "data": {"id": "mem_s' + odd + '", "created_at": 1767225600, '
        '"user": {"id": "user_s", "username": "na' + odd + 'me"}}}'
    )
    event = one_event(body)
    expected = json.loads(f'"{odd}"')
    nul = "".join("\x00" if 0xD800 <= ord(c) <= 0xDFFF else c for c in expected)
    assert event["membership_id"] == f"mem_s{nul}"
    assert event["username"] == f"na{nul}me"


def test_a_body_nested_beyond_any_parser_is_a_reject_not_a_crash() -> None:
    body = '{"action": "membership.went_valid", "data": ' + "[" * 5000 + "]" * 5000 + "}"
    batch = parse(record(body))
    assert batch.events.height == 0
    assert batch.rejects.height == 1


# --- event times in the future: damage, not facts (CLOCK_SKEW_ALLOWANCE past received_at) -----------------


@pytest.mark.parametrize(
    "timestamp",
    ["9999-12-31T23:59:59Z", "2026-02-01T12:05:06Z"],  # year 9999; just past received_at + 5 minutes
)
def test_an_event_time_beyond_the_clock_skew_allowance_is_a_reject(timestamp: str) -> None:
    batch = parse(record(v1("membership.activated", UNPINNED, timestamp=timestamp)))
    assert batch.events.height == 0
    assert batch.rejects.height == 1
    reject = batch.rejects.row(0, named=True)
    assert reject["reason"].startswith("event time in the future")
    assert timestamp in reject["reason"] and reject["webhook_id"] == "wh_1"


def test_an_event_time_within_the_clock_skew_allowance_is_kept() -> None:
    ev = one_event(v1("membership.activated", UNPINNED, timestamp="2026-02-01T12:05:05Z"))  # received + 4:59.75
    assert ev["event_at"] == utc(2026, 2, 1, 12, 5, 5)


def test_a_future_payload_time_without_an_envelope_is_a_reject_too() -> None:
    body = {"action": "membership.accessed", "data": {"id": "m", "accessed_at": 4102444800}}  # 2100-01-01
    batch = parse(record(body))
    assert batch.events.height == 0
    reasons = batch.rejects["reason"].to_list()
    assert reasons == [f"event time in the future: '4102444800' (received {RECEIVED})"]
