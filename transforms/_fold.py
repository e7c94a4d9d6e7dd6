"""Events + API facts → member state (``STATE_SCHEMA``), such that incremental folding equals a full pass.

Every state column is a join-semilattice value — a max, a min, or a set union — over the member's facts, so
folding is commutative, associative and idempotent: delivery order, duplicates (re-delivered webhooks, the
same backfill snapshot folded twice) and any split into batches give the same state. An incremental step
aggregates the batch per member, merges that with the state rows of the members it touches (and only those),
and keeps every other row as it is: its cost follows the batch, not the history.

Facts (docs/architecture.md, "Scoring"): joined(t), left(t), accessed(t) from webhooks (``event_at``), and one API
fact per
snapshot listing the membership (``fact_at`` = fetched_at, carrying status, created_at, last_accessed_at).

The "latest by time" rules are decided by integer keys, so a max over keys is the rule:
- validity key = µs·4 + source·2 + invalid, source webhook = 1, API = 0: the later fact wins; on equal times a
  webhook beats the API; then invalid beats valid (left beats joined). ``valid = key is even``.
- attribute key (member_name, email, membership_status, webhook_status) = µs·8 + source·4 + rank, rank
  left 2 > joined 1 > accessed 0 (API 0): on equal times webhook beats API, then left > joined > accessed; a
  remaining tie (same key, different values) resolves to the greatest value. Null values are not facts.
- joined_at = min(joined times, API created_at); last_active = max(joined times, API created_at, access
  instants); access instants = set(accessed times, API last_accessed_at); total_sessions = its size.
- company_id, user_id: a membership's never change; should sources disagree, the greatest id wins.
Events of kind ``other`` and events without a membership id are not facts.

Distinct access instants have to be remembered to stay exact under re-delivery and re-folding, so the state
keeps them (``access_instants``, 8 bytes each). Re-deliveries are identical facts, hence harmless, except for a
body with no time of its own whose retry was signed at a new time (``time_source`` signed_at/received_at):
across batches only the caller can drop it (by webhook id), see ``dedupe_events``.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from memberpulse.contracts.times import UTC_US, require_aware
from memberpulse.transforms._schema import FACT_SCHEMA, STATE_SCHEMA
from memberpulse.transforms._times import to_utc

_WEBHOOK, _API = 1, 0
_RANK = {"accessed": 0, "joined": 1, "left": 2}

# Fact-row columns (one row per fact, times as Int64 µs): the common shape events and API facts fold from.
_ROW_SCHEMA = pl.Schema(
    {
        "membership_id": pl.Utf8,
        "company_id": pl.Utf8,
        "user_id": pl.Utf8,
        "t": pl.Int64,
        "valid_key": pl.Int64,
        "webhook_valid_key": pl.Int64,
        "webhook_t": pl.Int64,
        "api_t": pl.Int64,
        "joined": pl.Int64,
        "active": pl.Int64,
        "instant": pl.Int64,
        "attr_key": pl.Int64,
        "member_name": pl.Utf8,
        "email": pl.Utf8,
        "membership_status": pl.Utf8,
        "webhook_status": pl.Utf8,
    }
)
_ATTRS = ("member_name", "email", "membership_status", "webhook_status")
_TIME_COLS = [name for name, dtype in STATE_SCHEMA.items() if isinstance(dtype, pl.Datetime)]


def empty_state() -> pl.DataFrame:
    """A state with no members."""
    return pl.DataFrame(schema=STATE_SCHEMA)


def restrict_as_of(
    events: pl.DataFrame | None, facts: pl.DataFrame | None, as_of: datetime
) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """Only the facts at or before ``as_of`` (facts later than T are ignored: an as-of in the past reproduces what
    was true then)."""
    cut = _utc(as_of)
    return (
        None if events is None else events.filter(pl.col("event_at") <= cut),
        None if facts is None else facts.filter(pl.col("fact_at") <= cut),
    )


def fold(
    state: pl.DataFrame | None,
    events: pl.DataFrame | None,
    facts: pl.DataFrame | None = None,
    *,
    as_of: datetime | None = None,
) -> pl.DataFrame:
    """New member state from ``state`` (or none), ``events`` (EVENT_SCHEMA) and API ``facts`` (FACT_SCHEMA).

    ``as_of`` drops the given events and facts later than it; a backdated score should fold from ``None``
    (``state`` already holds whatever it was built from; its ``max_fact_at`` tells whether that is past T).
    Row order of the result is unspecified.
    """
    if as_of is not None:
        events, facts = restrict_as_of(events, facts, as_of)
    rows = _fact_rows(events, facts)
    if state is None or state.height == 0:
        return empty_state() if rows.height == 0 else _finalize(_aggregate_rows(rows))
    state = state.select(list(STATE_SCHEMA)).cast(STATE_SCHEMA)
    if rows.height == 0:
        return state
    batch = _aggregate_rows(rows)
    touched = state["membership_id"].is_in(batch["membership_id"].implode())
    merged = _merge_partials(pl.concat([_partials_from_state(state.filter(touched)).select(batch.columns), batch]))
    return pl.concat([state.filter(~touched), _finalize(merged)])


# --- facts → rows -----------------------------------------------------------------------------------------


def _fact_rows(events: pl.DataFrame | None, facts: pl.DataFrame | None) -> pl.DataFrame:
    frames = []
    if events is not None and events.height:
        frames.append(_event_rows(events))
    if facts is not None and facts.height:
        frames.append(_api_rows(facts))
    if not frames:
        return pl.DataFrame(schema=_ROW_SCHEMA)
    return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]


def _event_rows(events: pl.DataFrame) -> pl.DataFrame:
    kind = pl.col("kind")
    t = pl.col("event_at").dt.epoch("us")
    rank = kind.replace_strict(_RANK, default=None, return_dtype=pl.Int64)
    valid_key = pl.when(kind != "accessed").then(t * 4 + _WEBHOOK * 2 + (kind == "left").cast(pl.Int64))
    # Select, then filter: only the fact columns are copied (filtering first would copy every event column).
    return (
        events.select(
            (kind.is_in(list(_RANK)) & pl.col("membership_id").is_not_null()).alias("_fact"),
            "membership_id",
            "company_id",
            "user_id",
            t.alias("t"),
            valid_key.alias("valid_key"),
            valid_key.alias("webhook_valid_key"),
            t.alias("webhook_t"),
            pl.lit(None, dtype=pl.Int64).alias("api_t"),
            pl.when(kind == "joined").then(t).alias("joined"),
            pl.when(kind != "left").then(t).alias("active"),
            pl.when(kind == "accessed").then(t).alias("instant"),
            (t * 8 + _WEBHOOK * 4 + rank).alias("attr_key"),
            "member_name",
            "email",
            "membership_status",
            pl.col("membership_status").alias("webhook_status"),
        )
        .filter(pl.col("_fact"))
        .drop("_fact")
        .cast(_ROW_SCHEMA)
    )


def _api_rows(facts: pl.DataFrame) -> pl.DataFrame:
    t = pl.col("fact_at").dt.epoch("us")
    created = pl.col("created_at").dt.epoch("us")
    accessed = pl.col("last_accessed_at").dt.epoch("us")
    return (
        facts.cast({k: v for k, v in FACT_SCHEMA.items() if k in facts.columns})
        .select(
            "membership_id",
            "company_id",
            "user_id",
            t.alias("t"),
            (t * 4 + _API * 2 + (~pl.col("valid")).cast(pl.Int64)).alias("valid_key"),
            pl.lit(None, dtype=pl.Int64).alias("webhook_valid_key"),
            pl.lit(None, dtype=pl.Int64).alias("webhook_t"),
            t.alias("api_t"),
            created.alias("joined"),
            pl.max_horizontal(created, accessed).alias("active"),
            accessed.alias("instant"),
            (t * 8 + _API * 4).alias("attr_key"),
            "member_name",
            "email",
            "membership_status",
            pl.lit(None, dtype=pl.Utf8).alias("webhook_status"),
        )
        .cast(_ROW_SCHEMA)
    )


# --- aggregation (facts → partial state) and merging (partial states → partial state) -------------------


_GID_SEED = 0x6D656D62


def _groupings() -> tuple[pl.Expr, ...]:
    """What to group members by: the id's 64-bit hash, then (on a collision) the id itself."""
    return pl.col("membership_id").hash(_GID_SEED), pl.col("membership_id")


def _reduce(frame: pl.DataFrame, simple: list[pl.Expr], instants: pl.Expr, attr_keys: dict[str, str]) -> pl.DataFrame:
    """Group ``frame`` by membership: ``simple`` aggregations, the set of ``instants``, and for each attribute
    the value with the greatest key (ties: the greatest value).

    Grouping is on a 64-bit hash of the membership id (integer hashing is several times cheaper than string
    hashing and most groups are tiny); should a second, independent hash disagree within a group (two ids
    colliding), the whole reduction is redone on the ids themselves. The latest-value rule avoids per-group
    filtering: first one row per (member, key) keeping the greatest value, after which the key is unique
    within a member and ``max_by`` is exact.
    """
    # A second, independent hash of the id tells a group holding two ids (a collision) from a normal one.
    check = pl.col("membership_id").hash(_GID_SEED + 1).alias("_check")
    for gid in _groupings():
        work = frame.with_columns(gid.alias("_gid"), check)
        out = work.group_by("_gid").agg(
            pl.col("membership_id").first(),
            pl.col("_check").min().alias("_lo"),
            pl.col("_check").max().alias("_hi"),
            *simple,
            instants.alias("access_instants"),
        )
        if (out["_lo"] == out["_hi"]).all():
            break
    # Attributes that share a key column and usually arrive together are reduced in one pass (measured: pairs
    # beat both one pass per attribute and one pass for all four).
    pairs = (("member_name", "email"), ("membership_status", "webhook_status"))
    groups = [{a: attr_keys[a] for a in pair} for pair in pairs]
    if any(len(set(g.values())) > 1 for g in groups):
        groups = [{a: k} for a, k in attr_keys.items()]
    for group in groups:
        out = out.join(_latest_values(work, group), on="_gid", how="left")
    return out.drop("_gid", "_lo", "_hi")


def _latest_values(work: pl.DataFrame, attr_keys: dict[str, str]) -> pl.DataFrame:
    """Per member, for attributes sharing one key column: the value with the greatest key, ties → greatest."""
    (key,) = set(attr_keys.values())
    attrs = list(attr_keys)
    facts = work.select("_gid", key, *attrs).filter(pl.any_horizontal(pl.col(a).is_not_null() for a in attrs))
    # One row per (member, key): ties resolved to the greatest value, so the key is unique within a member.
    # Ties are rare (two facts of one member at the same µs), so only the rows whose (member, key) hash repeats
    # are grouped; a hash collision just sends a few more rows through the exact group-by.
    pair = pl.col("_gid").hash(_GID_SEED + 2) ^ pl.col(key).hash(_GID_SEED + 3)
    tied = facts.select(pair.is_duplicated()).to_series()
    if tied.any():
        facts = pl.concat(
            [facts.filter(~tied), facts.filter(tied).group_by("_gid", key).agg(pl.col(a).max() for a in attrs)]
        )
    # Each attribute's own key: null where the attribute is, so max_by skips rows that lack it.
    facts = facts.with_columns(pl.when(pl.col(a).is_not_null()).then(pl.col(key)).alias(f"{a}_key") for a in attrs)
    return facts.group_by("_gid").agg(
        *(pl.col(a).max_by(f"{a}_key") for a in attrs), *(pl.col(f"{a}_key").max() for a in attrs)
    )


def _aggregate_rows(rows: pl.DataFrame) -> pl.DataFrame:
    # Webhook-only / API-only columns (webhook_valid_key, webhook_t, api_t) are made with the rows, so every
    # aggregation below is a plain min/max and no second copy of the rows is needed.
    simple = [
        pl.col("company_id").max(),
        pl.col("user_id").max(),
        pl.col("valid_key").max(),
        pl.col("webhook_valid_key").max(),
        pl.col("joined").min().alias("joined_at"),
        pl.col("active").max().alias("last_active"),
        pl.col("t").min().alias("min_fact_at"),
        pl.col("t").max().alias("max_fact_at"),
        pl.col("webhook_t").min().alias("webhook_first_at"),
        pl.col("webhook_t").max().alias("webhook_last_at"),
        pl.col("api_t").max().alias("api_last_at"),
    ]
    return _reduce(rows, simple, pl.col("instant").drop_nulls().unique(), dict.fromkeys(_ATTRS, "attr_key"))


def _partials_from_state(state: pl.DataFrame) -> pl.DataFrame:
    """State rows in the partial (Int64 µs) shape that :func:`_aggregate_rows` produces."""
    keep = [
        "membership_id",
        "company_id",
        "user_id",
        "valid_key",
        "webhook_valid_key",
        "joined_at",
        "last_active",
        "access_instants",
        *(c for a in _ATTRS for c in (a, f"{a}_key")),
        "min_fact_at",
        "max_fact_at",
        "webhook_first_at",
        "webhook_last_at",
        "api_last_at",
    ]
    return (
        state.select(keep)
        .with_columns(pl.col(c).dt.epoch("us") for c in keep if c in _TIME_COLS)
        .with_columns(pl.col("access_instants").cast(pl.List(pl.Int64)))
    )


def _merge_partials(parts: pl.DataFrame) -> pl.DataFrame:
    simple = [
        pl.col("company_id").max(),
        pl.col("user_id").max(),
        pl.col("valid_key").max(),
        pl.col("webhook_valid_key").max(),
        pl.col("joined_at").min(),
        pl.col("last_active").max(),
        pl.col("min_fact_at").min(),
        pl.col("max_fact_at").max(),
        pl.col("webhook_first_at").min(),
        pl.col("webhook_last_at").max(),
        pl.col("api_last_at").max(),
    ]
    instants = pl.col("access_instants").explode().drop_nulls().unique()
    return _reduce(parts, simple, instants, {a: f"{a}_key" for a in _ATTRS})


def _finalize(partial: pl.DataFrame) -> pl.DataFrame:
    """Partial (keys, Int64 µs) → state: decode the keys, times to Datetime(us, UTC), columns in order."""
    vk, wvk = pl.col("valid_key"), pl.col("webhook_valid_key")
    out = partial.with_columns(
        valid=(vk % 2) == 0,
        valid_at=to_utc(vk // 4),
        valid_source=pl.when(vk.is_null())
        .then(None)
        .when((vk // 2) % 2 == _WEBHOOK)
        .then(pl.lit("webhook"))
        .otherwise(pl.lit("api")),
        webhook_valid=(wvk % 2) == 0,
        webhook_valid_at=to_utc(wvk // 4),
        webhook_status_at=to_utc(pl.col("webhook_status_key") // 8),
        total_sessions=pl.col("access_instants").list.len().cast(pl.Int64),
        access_instants=pl.col("access_instants").cast(pl.List(UTC_US)),
        **{
            c: to_utc(pl.col(c))
            for c in (
                "joined_at",
                "last_active",
                "min_fact_at",
                "max_fact_at",
                "webhook_first_at",
                "webhook_last_at",
                "api_last_at",
            )
        },
    )
    return out.select(list(STATE_SCHEMA)).cast(STATE_SCHEMA)


def _utc(moment: datetime) -> datetime:
    return require_aware(moment, "as_of")
