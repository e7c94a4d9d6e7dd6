"""Raw landing records → typed events (+ rejects). Deduplication by webhook id.

Input of :func:`parse_raw` is the raw frame (``RAW_SCHEMA``; optional ``source_file``/``source_offset`` pass
through to rejects). Output is a :class:`ParsedBatch`: ``events`` (``EVENT_SCHEMA``) and ``rejects``
(``REJECT_SCHEMA``). Every input row lands in exactly one of the two.

Payload shapes understood (event vocabulary: memberpulse.contracts.events; docs/architecture.md):
- the legacy envelope of the TypeScript webhook guide this project started from: ``{"action", "data": {id, user_id,
company_id, email, username,
  created_at|accessed_at|expired_at}}`` with ISO times;
- Whop legacy v5: ``{"action", "api_version": "v5", "data": {id, user_id, created_at (epoch s), status,
  valid…}}``;
- Whop v1: ``{"id", "type", "timestamp" (ISO), "data", "account_id"}``, ``data`` pinned (``user_id``,
  ``member_id``, ``company_id``…) or unpinned (``user{id,username,name,email}``, ``company{id}``).

Event time (docs/architecture.md, "Scoring"): the envelope's ``timestamp``; else the kind's own field (joined
``data.created_at``,
accessed ``data.accessed_at``, left ``data.expired_at``); else ``signed_at``; else ``received_at``.

Rejects (reason prefixes are stable): ``empty body``, ``body is not valid JSON: …``, ``body is not a JSON
object``, ``missing data.id`` (joined/accessed/left only), ``unparsable <field>: '<text>'``,
``unparsable received_at: '<text>'``. Unknown event types are not rejects: they are events of kind ``other``.

Decoding is the hot path. Bodies are decoded by DuckDB's JSON functions (yyjson, all 18 paths in one parse per
body, multi-threaded), run in-memory over the Arrow view of the bodies: pure computation, no files, no clock.
The definition stays polars' NDJSON reader against one struct type covering every shape (``_decode_framed``:
bodies framed as NDJSON lines by polars' CSV writer with no quoting, read in one multi-threaded call); where
yyjson could disagree with it (syntax only yyjson accepts, numbers it renders differently, objects where a
string is expected, bodies it refuses) the rows are re-read by the reader, one row's outcome never depending
on its neighbours. A row the reader refuses (bad JSON, or a field of an unexpected JSON
type such as ``data.user`` as a string) is read leniently with orjson: wrongly typed fields count as absent,
bad JSON becomes a reject. Bodies containing a newline (pretty-printed JSON) go through ``str.json_decode``.
A key repeated within one object takes its last value, as in the landing and whop-sdk (``json.loads``): yyjson
and the reader take the first, so such bodies (DuckDB's ``json_keys`` finds them) are read with orjson.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

import duckdb
import orjson
import polars as pl
from polars.exceptions import PolarsError

from memberpulse.contracts.events import EVENT_KINDS
from memberpulse.contracts.frames import conform
from memberpulse.contracts.raw_record import REQUIRED_FIELDS, InvalidRawRecord, decode_raw_record
from memberpulse.contracts.times import CLOCK_SKEW_ALLOWANCE
from memberpulse.transforms._schema import (
    EVENT_SCHEMA,
    RAW_SCHEMA,
    REJECT_BODY_BYTES,
    REJECT_SCHEMA,
    SOURCE_SCHEMA,
)
from memberpulse.transforms._times import complete_epoch_us, iso_offset_us, to_utc

_S = pl.Utf8
_USER = pl.Struct({"id": _S, "username": _S, "name": _S, "email": _S})
_DATA = pl.Struct(
    {
        "id": _S,
        "user_id": _S,
        "company_id": _S,
        "email": _S,
        "username": _S,
        "status": _S,
        "created_at": _S,
        "accessed_at": _S,
        "expired_at": _S,
        "user": _USER,
        "company": pl.Struct({"id": _S}),
    }
)
_BODY = pl.Struct({"action": _S, "type": _S, "timestamp": _S, "account_id": _S, "data": _DATA})

# The flattened body: (column, path into the JSON document).
_FLAT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("b_action", ("action",)),
    ("b_type", ("type",)),
    ("b_timestamp", ("timestamp",)),
    ("b_account_id", ("account_id",)),
    ("d_id", ("data", "id")),
    ("d_user_id", ("data", "user_id")),
    ("d_company_id", ("data", "company_id")),
    ("d_email", ("data", "email")),
    ("d_username", ("data", "username")),
    ("d_status", ("data", "status")),
    ("d_created_at", ("data", "created_at")),
    ("d_accessed_at", ("data", "accessed_at")),
    ("d_expired_at", ("data", "expired_at")),
    ("u_id", ("data", "user", "id")),
    ("u_username", ("data", "user", "username")),
    ("u_name", ("data", "user", "name")),
    ("u_email", ("data", "user", "email")),
    ("c_id", ("data", "company", "id")),
)
_FLAT_SCHEMA = pl.Schema({**{name: _S for name, _ in _FLAT}, "_reason": _S})

_BISECT_ROWS = 16

# Surrogate code points a str can only hold when a JSON escape put it there unpaired (json.loads allows it).
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class ParsedBatch:
    """Typed events (``EVENT_SCHEMA``) and rejected records (``REJECT_SCHEMA``) of one raw batch."""

    events: pl.DataFrame
    rejects: pl.DataFrame

    @property
    def unknown_events(self) -> int:
        """How many events are of a type the transforms do not fold (kind ``other``)."""
        return int((self.events["kind"] == "other").sum())

    def unknown_event_types(self) -> dict[str, int]:
        """Count per unknown event type (a body with no type at all counts as ``(none)``)."""
        counts = self.events.filter(pl.col("kind") == "other").group_by(pl.col("event_type").fill_null("(none)")).len()
        return dict(zip(counts["event_type"].to_list(), counts["len"].to_list(), strict=True))


class RawLines(NamedTuple):
    """:func:`parse_ndjson`'s result: valid raw records (``RAW_SCHEMA``) and bad lines (``REJECT_SCHEMA``)."""

    records: pl.DataFrame
    rejects: pl.DataFrame


# --- NDJSON lines → raw records -------------------------------------------------------------------------


def parse_ndjson(data: bytes, *, source_file: str | None = None, base_offset: int = 0) -> RawLines:
    """Raw NDJSON bytes (complete lines only; the caller cuts at the last newline) → raw records + bad lines.

    Blank lines are skipped. A line that is not a JSON object with string ``webhook_id``, ``received_at`` and
    ``body`` (``signed_at`` an integer or null, ``scheme``/``event_type`` strings or null) is a reject with
    ``reason`` ``invalid raw record: …``, ``source_offset`` = ``base_offset`` + the line's byte offset in
    ``data``, ``source_file`` as given.
    """
    if not data.strip():
        return RawLines(pl.DataFrame(schema=RAW_SCHEMA), pl.DataFrame(schema=REJECT_SCHEMA))
    try:
        records = pl.read_ndjson(io.BytesIO(data), schema=RAW_SCHEMA)
    except PolarsError:
        records = None
    if (
        records is not None
        and records.select(pl.all_horizontal(pl.col("webhook_id", "received_at", "body").is_not_null()).all()).item()
    ):
        return RawLines(records, pl.DataFrame(schema=REJECT_SCHEMA))
    # Some line is bad: read line by line to tell which (rare: the landing writes these files itself).
    return _parse_lines_slowly(data, source_file=source_file, base_offset=base_offset)


def _parse_lines_slowly(data: bytes, *, source_file: str | None, base_offset: int) -> RawLines:
    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    offset = 0
    for line in data.split(b"\n"):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        record, problem = _check_raw_line(line)
        if record is not None:
            good.append(record)
            continue
        doc: object = None
        with contextlib.suppress(orjson.JSONDecodeError):
            doc = orjson.loads(line)
        record_fields: dict[str, object] = doc if isinstance(doc, dict) else {}
        bad.append(
            {
                "webhook_id": _text_or_none(record_fields.get("webhook_id")),
                "received_at": _text_or_none(record_fields.get("received_at")),
                "event_type": _text_or_none(record_fields.get("event_type")),
                "reason": f"invalid raw record: {problem}",
                "body": _excerpt(line),
                "source_file": source_file,
                "source_offset": base_offset + start,
            }
        )
    return RawLines(pl.DataFrame(good, schema=RAW_SCHEMA), pl.DataFrame(bad, schema=REJECT_SCHEMA))


# Control characters (NUL included) are not text a database column or a terminal should receive.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _excerpt(line: bytes) -> str:
    """The start of an unreadable line as plain text, at most REJECT_BODY_BYTES: invalid UTF-8 and control
    characters written as ``\\xNN`` escapes, so a human can still recognise binary garbage."""
    text = line[:REJECT_BODY_BYTES].decode("utf-8", "backslashreplace")
    return _prefix(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)) or ""


def _check_raw_line(line: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        return decode_raw_record(line), ""
    except InvalidRawRecord as problem:
        return None, str(problem)


# --- raw records → events ---------------------------------------------------------------------------------


def parse_raw(raw: pl.DataFrame) -> ParsedBatch:
    """Raw records (``RAW_SCHEMA`` + optional ``source_file``/``source_offset``) → events and rejects."""
    raw = _conform_raw(raw)
    if raw.height == 0:
        return ParsedBatch(pl.DataFrame(schema=EVENT_SCHEMA), pl.DataFrame(schema=REJECT_SCHEMA))
    body = pl.col("body")
    route = (
        pl.when(~body.str.contains(r"^\s*\{").fill_null(False))
        .then(pl.lit(0))  # not an object: orjson says why
        .when(body.str.contains("\n", literal=True))
        .then(pl.lit(1))  # cannot be framed as one NDJSON line
        .otherwise(pl.lit(2))
    )
    routes = raw.select(route.alias("route"))["route"]
    parts = []
    for code, decode in ((2, _decode_fast), (1, _decode_each), (0, _decode_python)):
        wanted = routes == code
        if not wanted.any():
            continue
        part = raw if wanted.all() else raw.filter(wanted)  # the usual case: no copy of the bodies
        parts.append(part.hstack(decode(part["body"])))
    flat = pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]
    return _typed(flat)


def _conform_raw(raw: pl.DataFrame) -> pl.DataFrame:
    return conform(
        raw, {**RAW_SCHEMA, **SOURCE_SCHEMA}, required=REQUIRED_FIELDS, what="raw frame",
        hint="pass the landing's raw records (webhook_id, received_at, body, …)",
    )  # fmt: skip


def _flatten(doc: pl.Expr) -> list[pl.Expr]:
    exprs = []
    for name, path in _FLAT:
        expr = doc
        for key in path:
            expr = expr.struct.field(key)
        exprs.append(expr.alias(name))
    return [*exprs, pl.lit(None, dtype=_S).alias("_reason")]


# DuckDB's JSON extraction (yyjson, one parse per body for all paths, multi-threaded) is ~3x cheaper than
# polars' NDJSON reader for our 18 paths. It runs in-memory over the Arrow view of the bodies: no files, no
# clock, so the transforms stay pure. Its output must equal the polars reader's (``_decode_framed``), which
# stays the definition; yyjson differs from it in a few places, and those rows are re-read by the reader:
# - yyjson accepts NaN/Inf, 1e400 and trailing commas, which the reader refuses (→ rejects): any body with
#   such a token (or a fraction/exponent/19+ digit number, which the two render differently) is re-read;
# - objects/arrays where a string is expected render differently: rows with a value starting ``{``/``[``;
# - a body yyjson refuses (bad JSON, lone surrogates…) fails the query: the batch is bisected, and the few
#   rows of the failing slice are read by the reader.
_PATHS = ", ".join("'$." + ".".join(path) + "'" for _, path in _FLAT)
# The objects whose keys are read: a key repeated in one of them takes its last value (as ``json.loads``, orjson
# and the SDK do), so such bodies are read with orjson; yyjson and polars' reader would take the first.
_OBJECTS = "'$', '$.data', '$.data.user', '$.data.company'"
_DUCK_SQL = (
    "SELECT "
    + ", ".join(f"v[{i + 1}] AS {name}" for i, (name, _) in enumerate(_FLAT))
    + ", coalesce(list_bool_or(list_transform(k, lambda x: len(x) > len(list_distinct(x)))), false) AS _dup"
    + f" FROM (SELECT json_extract_string(body, [{_PATHS}]) AS v, json_keys(body, [{_OBJECTS}]) AS k FROM bodies)"
)
_REPEATED_KEYS_SQL = (
    "SELECT CASE WHEN json_valid(body) THEN coalesce(list_bool_or(list_transform(json_keys(body, "
    f"[{_OBJECTS}]), lambda x: len(x) > len(list_distinct(x)))), false) ELSE false END AS dup FROM bodies"
)
_YYJSON_ONLY_SYNTAX = r"(?i)[:\[,]\s*-?(nan|inf|\d+[.e]|\d{19})|,\s*[}\]]"


def _duckdb_extract(bodies: pl.Series) -> pl.DataFrame:
    con = duckdb.connect()
    try:
        con.register("bodies", pl.DataFrame({"body": bodies}).to_arrow())
        flat: pl.DataFrame = con.sql(_DUCK_SQL).pl()
        return flat
    finally:
        con.close()


def _decode_fast(bodies: pl.Series) -> pl.DataFrame:
    """:func:`_decode_framed`'s result, computed by DuckDB wherever the two agree (see above)."""
    # The token scan (polars, one thread) runs while DuckDB decodes: both release the GIL.
    with ThreadPoolExecutor(1) as pool:
        yyjson_only = pool.submit(bodies.str.contains, _YYJSON_ONLY_SYNTAX)
        try:
            flat = _duckdb_extract(bodies)
        except duckdb.Error:
            flat = None
        suspect = yyjson_only.result()
    if flat is None:
        if len(bodies) <= _BISECT_ROWS:
            return _last_key_wins(bodies, _decode_framed)
        half = len(bodies) // 2
        return pl.concat([_decode_fast(bodies[:half]), _decode_fast(bodies[half:])])
    if flat.height != len(bodies):  # pragma: no cover - DuckDB keeps insertion order and row count
        return _decode_framed(bodies)
    repeated_keys = flat.get_column("_dup")
    flat = flat.drop("_dup").with_columns(pl.lit(None, dtype=_S).alias("_reason")).cast(_FLAT_SCHEMA)
    container = pl.any_horizontal(
        pl.col(name).str.starts_with("{") | pl.col(name).str.starts_with("[") for name, _ in _FLAT
    )
    redo = (suspect | flat.select(container.fill_null(False)).to_series()) & ~repeated_keys
    for rows, decode in ((redo.arg_true(), _decode_framed), (repeated_keys.arg_true(), _decode_python)):
        if rows.len():
            exact = decode(bodies.gather(rows))
            flat = pl.DataFrame([flat[name].scatter(rows, exact[name]) for name in flat.columns])
    return flat


def _decode_framed(bodies: pl.Series) -> pl.DataFrame:
    """Flattened bodies, row-aligned (every body starts with ``{`` and has no newline), by polars' NDJSON reader:
    its result where it takes the row, the lenient orjson reading where it refuses it. Refused slices are
    bisected down to single rows, so a refused row never sends its neighbours to the lenient reading (which
    renders floats and objects differently from the reader)."""
    try:
        frame = io.BytesIO()
        pl.DataFrame({"body": bodies}).write_csv(frame, include_header=False, quote_style="never")
        frame.seek(0)
        docs = pl.read_ndjson(frame, schema=_BODY.to_schema())
    except PolarsError:
        docs = None
    if docs is not None and docs.height == len(bodies):
        return docs.select(pl.struct(pl.all()).alias("doc")).select(_flatten(pl.col("doc")))
    if len(bodies) == 1:
        return _decode_python(bodies)
    half = len(bodies) // 2
    return pl.concat([_decode_framed(bodies[:half]), _decode_framed(bodies[half:])])


def _repeated_keys(bodies: pl.Series) -> pl.Series:
    """True where one of the objects read (``_OBJECTS``) repeats a key; False where unsure (invalid JSON)."""
    con = duckdb.connect()
    try:
        con.register("bodies", pl.DataFrame({"body": bodies}).to_arrow())
        repeated: pl.Series = con.sql(_REPEATED_KEYS_SQL).pl().to_series()
        return repeated
    except duckdb.Error:
        return pl.Series([False] * len(bodies))
    finally:
        con.close()


def _last_key_wins(bodies: pl.Series, decode: Callable[[pl.Series], pl.DataFrame]) -> pl.DataFrame:
    """``decode(bodies)``, except that bodies repeating a key are read with orjson (the last value wins)."""
    repeated = _repeated_keys(bodies)
    if not repeated.any():
        return decode(bodies)
    flat = pl.concat([decode(bodies.filter(~repeated)), _decode_python(bodies.filter(repeated))])
    order = pl.concat([repeated.not_().arg_true(), repeated.arg_true()])
    return flat.with_columns(pl.Series("__row", order)).sort("__row").drop("__row")


def _decode_each(bodies: pl.Series) -> pl.DataFrame:
    """Bodies polars' NDJSON reader cannot take (they contain newlines): ``str.json_decode``, row-aligned."""
    return _last_key_wins(bodies, _decode_each_json)


def _decode_each_json(bodies: pl.Series) -> pl.DataFrame:
    try:
        return pl.DataFrame({"body": bodies}).select(_flatten(pl.col("body").str.json_decode(_BODY)))
    except PolarsError:
        return _bisect(bodies, _decode_each_json)


def _bisect(bodies: pl.Series, decode: Callable[[pl.Series], pl.DataFrame]) -> pl.DataFrame:
    """Decode halves separately until the refused rows are few; those are read leniently with orjson."""
    if len(bodies) <= _BISECT_ROWS:
        return _decode_python(bodies)
    half = len(bodies) // 2
    return pl.concat([decode(bodies[:half]), decode(bodies[half:])])


def _decode_python(bodies: pl.Series) -> pl.DataFrame:
    return pl.DataFrame([_lenient(b) for b in bodies.to_list()], schema=_FLAT_SCHEMA, orient="row")


def _lenient(body: str | None) -> tuple[str | None, ...]:
    """One body read with orjson; fields of an unexpected JSON type count as absent."""
    blank: tuple[str | None, ...] = (None,) * len(_FLAT)
    if body is None or not body.strip():
        return (*blank, "empty body")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        doc = _with_lone_surrogates(body)
        if doc is None:
            return (*blank, f"body is not valid JSON: {exc}")
    if not isinstance(doc, dict):
        return (*blank, "body is not a JSON object")
    values: list[str | None] = []
    for _, path in _FLAT:
        node: Any = doc
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        values.append(_text_or_none(node))
    return (*values, None)


def _with_lone_surrogates(body: str) -> Any:
    """The body as the landing and whop-sdk read it (``json.loads`` keeps a lone or reversed surrogate escape
    such as ``\\udfff``, which orjson and polars refuse), or None when it is not JSON at all. The surrogates
    become NUL, as polars' reader makes a lone high one, and NUL is then stored as U+FFFD everywhere: one
    odd character never costs a member its event."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python's stack (orjson stops at 1024)
        return None


def _text_or_none(value: object) -> str | None:
    """A JSON scalar as polars' decoder renders it into a string field; objects and arrays → None."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _SURROGATE.sub("\x00", value)
    if isinstance(value, int | float):
        return repr(value)
    return None


def _nonempty(name: str) -> pl.Expr:
    col = pl.col(name)
    return pl.when(col.str.len_bytes() > 0).then(col)


_KIND_TIME = {"joined": "d_created_at", "accessed": "d_accessed_at", "left": "d_expired_at"}
_SKEW_US = CLOCK_SKEW_ALLOWANCE // timedelta(microseconds=1)
# The event time as the event rows take it: the body's own time, else the signature's, else the arrival.
_EVENT_US = pl.coalesce(pl.col("time_us"), pl.col("signed_at") * 1_000_000, pl.col("received_us"))
# An event dated after its own arrival (beyond the clock skew two hosts may have) is damage, not a fact: kept,
# it would stay the member's "latest" forever and every later run would re-score it.
_IN_THE_FUTURE = (_EVENT_US - pl.col("received_us")).gt(_SKEW_US)


def _typed(flat: pl.DataFrame) -> ParsedBatch:
    kind = pl.col("kind")
    df = _with_typed_columns(flat)
    bad = (
        pl.col("_reason").is_not_null()
        | ((kind != "other") & pl.col("membership_id").is_null())
        | (pl.col("time_text").is_not_null() & pl.col("time_us").is_null())
        | pl.col("received_us").is_null()
        | _IN_THE_FUTURE.fill_null(False)
    )
    df = df.with_columns(_bad=bad)
    any_bad = bool(df["_bad"].any())
    good = df.filter(~pl.col("_bad")) if any_bad else df  # the usual case: no copy
    rejects = _rejects(df.filter(pl.col("_bad"))) if any_bad else pl.DataFrame(schema=REJECT_SCHEMA)
    return ParsedBatch(_event_rows(good).cast(EVENT_SCHEMA), rejects)


def _with_typed_columns(flat: pl.DataFrame) -> pl.DataFrame:
    """The flattened fields resolved to event columns, with ``time_us`` and ``received_us`` parsed."""
    kind = pl.col("kind")
    own_text = pl.coalesce(*(pl.when(kind == k).then(pl.col(c)) for k, c in _KIND_TIME.items()))
    username = pl.coalesce(_nonempty("u_username"), _nonempty("d_username"))
    # One lazy query, so polars runs the independent columns (the received_at parse among them) in parallel.
    df = (
        flat.lazy()
        .with_columns(
            received_fast=iso_offset_us(pl.col("received_at")),
            event_type=pl.coalesce(_nonempty("b_type"), _nonempty("b_action"), pl.col("event_type")),
            membership_id=_nonempty("d_id"),
            user_id=pl.coalesce(_nonempty("d_user_id"), _nonempty("u_id")),
            company_id=pl.coalesce(_nonempty("d_company_id"), _nonempty("c_id"), _nonempty("b_account_id")),
            username=username,
            member_name=pl.coalesce(_nonempty("u_name"), username),
            email=pl.coalesce(_nonempty("u_email"), _nonempty("d_email")),
            membership_status=_nonempty("d_status"),
        )
        .with_columns(
            kind=pl.col("event_type").replace_strict(dict(EVENT_KINDS), default="other", return_dtype=pl.Utf8),
        )
        .with_columns(time_text=pl.coalesce(pl.col("b_timestamp"), own_text))
        .with_columns(time_fast=iso_offset_us(pl.col("time_text")))
        .collect()
    )
    return df.with_columns(
        time_us=complete_epoch_us(df["time_text"], df["time_fast"]),
        received_us=complete_epoch_us(df["received_at"], df["received_fast"]),
    )


def _event_rows(good: pl.DataFrame) -> pl.DataFrame:
    """The event columns of the rows that parsed; the event time falls back to signed_at, then received_at."""
    time_source = (
        pl.when(pl.col("b_timestamp").is_not_null())
        .then(pl.lit("envelope"))
        .when(pl.col("time_text").is_not_null())
        .then(pl.lit("payload"))
        .when(pl.col("signed_at").is_not_null())
        .then(pl.lit("signed_at"))
        .otherwise(pl.lit("received_at"))
    )
    return good.select(
        "webhook_id",
        to_utc(pl.col("received_us")).alias("received_at"),
        "signed_at",
        "scheme",
        "event_type",
        "kind",
        to_utc(_EVENT_US).alias("event_at"),
        time_source.alias("time_source"),
        "membership_id",
        "user_id",
        "company_id",
        "username",
        "member_name",
        "email",
        "membership_status",
    )


def _rejects(bad: pl.DataFrame) -> pl.DataFrame:
    """Reject rows with their reason (the first that applies), worked out only for the few bad rows."""
    kind = pl.col("kind")
    time_field = (
        pl.when(pl.col("b_timestamp").is_not_null())
        .then(pl.lit("timestamp"))
        .otherwise(pl.coalesce(*(pl.when(kind == k).then(pl.lit("data." + c[2:])) for k, c in _KIND_TIME.items())))
    )
    reason = pl.coalesce(
        pl.col("_reason"),
        pl.when((kind != "other") & pl.col("membership_id").is_null()).then(pl.lit("missing data.id")),
        pl.when(pl.col("time_text").is_not_null() & pl.col("time_us").is_null()).then(
            pl.format("unparsable {}: '{}'", time_field, pl.col("time_text").str.head(64))
        ),
        pl.when(pl.col("received_us").is_null()).then(
            pl.format("unparsable received_at: '{}'", pl.col("received_at").fill_null("").str.head(64))
        ),
        pl.when(_IN_THE_FUTURE).then(
            pl.format(
                "event time in the future: '{}' (received {})",
                pl.coalesce(pl.col("time_text"), pl.col("signed_at").cast(pl.Utf8)).str.head(64),
                pl.col("received_at"),
            )
        ),
    )
    return bad.select(
        "webhook_id",
        "received_at",
        "event_type",
        reason.alias("reason"),
        pl.Series("body", [_prefix(b) for b in bad["body"].to_list()], dtype=pl.Utf8),
        "source_file",
        "source_offset",
    ).cast(REJECT_SCHEMA)


def _prefix(text: str | None) -> str | None:
    """At most REJECT_BODY_BYTES of UTF-8, never cutting a character in half."""
    if text is None:
        return None
    raw = text.encode("utf-8", "replace")
    if len(raw) <= REJECT_BODY_BYTES:
        return text
    return raw[:REJECT_BODY_BYTES].decode("utf-8", "ignore")


# --- dedupe -----------------------------------------------------------------------------------------------


def dedupe_events(events: pl.DataFrame | None) -> pl.DataFrame:
    """One event per webhook id, ordered by event time (then webhook id), never by arrival.

    Whop re-delivers with the same id and body, so which copy survives does not matter to the fold, but it is
    still chosen deterministically: the earliest ``event_at``, then the earliest ``received_at``, then the
    smallest values of the other columns. Copies differ only when the body carries no event time
    (``time_source`` ``signed_at``/``received_at``: each delivery is signed anew); for those, exactness across
    incremental batches needs the caller to drop webhook ids it has folded before.
    """
    if events is None or events.height == 0:
        return pl.DataFrame(schema=EVENT_SCHEMA)
    if events.n_chunks() > 1:  # gathering from many chunks costs several times a contiguous copy
        events = events.rechunk()
    # Work out the surviving rows and their order on narrow key columns, then gather once: one copy of the
    # wide frame instead of a filtered copy plus a sorted copy.
    keys = events.select("event_at", "webhook_id").with_row_index("_row")
    # Repeats are found through a 64-bit hash of the id (integer hashing is far cheaper than string hashing);
    # the few candidates, true repeats plus any hash collision, are resolved on the full rows.
    candidate = events["webhook_id"].hash(seed=0x5EED).is_duplicated()
    if candidate.any():
        many = events.with_row_index("_row").filter(candidate)
        first = ("webhook_id", "event_at", "received_at")
        order = [*first, *(c for c in events.columns if c not in first)]
        kept = many.sort(order, nulls_last=True).unique("webhook_id", keep="first", maintain_order=True)["_row"]
        keys = keys.filter(~candidate | pl.col("_row").is_in(kept.implode()))
    return events[keys.sort(["event_at", "webhook_id"])["_row"]]
