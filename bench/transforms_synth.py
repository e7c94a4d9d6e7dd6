"""Synthetic raw webhook records for the transforms benchmark, built with vectorised polars string ops.

A realistic mix: every membership joins once, most events are accesses, some leave, some are other Whop
events (kept and counted by the transforms). Payload shapes: those of the TypeScript webhook guide this project
started from, Whop legacy v5 and Whop v1 (pinned
and unpinned). A few percent of deliveries are duplicated (same webhook id and body, later ``received_at``),
and the frame is shuffled so arrival order is not event order.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

BASE = datetime(2026, 1, 1, tzinfo=UTC)
SPAN_S = 90 * 86_400
KINDS = ("joined", "accessed", "left", "other")


def _iso(col: str) -> pl.Expr:
    return pl.from_epoch(pl.col(col), time_unit="s").dt.replace_time_zone("UTC").dt.to_string("%Y-%m-%dT%H:%M:%SZ")


def _fmt(template: str, *exprs: pl.Expr) -> pl.Expr:
    """``template`` with each ``%s`` replaced by the next expression (pl.format reads JSON braces as names)."""
    parts = template.split("%s")
    assert len(parts) == len(exprs) + 1, template
    pieces: list[pl.Expr] = []
    for lit, expr in zip(parts, [*exprs, None], strict=True):
        if lit:
            pieces.append(pl.lit(lit))
        if expr is not None:
            pieces.append(expr.cast(pl.Utf8))
    return pl.concat_str(pieces)


def _bodies(df: pl.DataFrame) -> pl.Series:
    """One body per row; ``shape`` 0 seed, 1 v5, 2 v1 unpinned, 3 v1 pinned; ``kind`` as in KINDS."""
    mid = pl.col("mid")
    t_iso = _iso("t")
    t_str = pl.col("t").cast(pl.Utf8)
    seed_type = (
        pl.when(pl.col("kind") == "joined")
        .then(pl.lit("membership.went_valid"))
        .when(pl.col("kind") == "accessed")
        .then(pl.lit("membership.accessed"))
        .when(pl.col("kind") == "left")
        .then(pl.lit("membership.went_invalid"))
        .otherwise(pl.lit("membership.metadata_updated"))
    )
    seed_field = (
        pl.when(pl.col("kind") == "joined")
        .then(pl.lit("created_at"))
        .when(pl.col("kind") == "accessed")
        .then(pl.lit("accessed_at"))
        .otherwise(pl.lit("expired_at"))
    )
    v1_type = (
        pl.when(pl.col("kind") == "joined")
        .then(pl.lit("membership.activated"))
        .when(pl.col("kind") == "accessed")
        .then(pl.lit("membership.accessed"))
        .when(pl.col("kind") == "left")
        .then(pl.lit("membership.deactivated"))
        .otherwise(pl.lit("membership.updated"))
    )
    status = pl.when(pl.col("kind") == "left").then(pl.lit("canceled")).otherwise(pl.lit("active"))
    valid = pl.when(pl.col("kind") == "left").then(pl.lit("false")).otherwise(pl.lit("true"))
    seed = _fmt(
        '{"action":"%s","data":{"id":"mem_%s","user_id":"user_%s","company_id":"%s",'
        '"email":"u%s@example.com","username":"member%s","%s":"%s"}}',
        seed_type,
        mid,
        mid,
        pl.col("company"),
        mid,
        mid,
        seed_field,
        t_iso,
    )
    v5 = _fmt(
        '{"action":"%s","api_version":"v5","data":{"id":"mem_%s","product_id":"prod_1","user_id":"user_%s",'
        '"plan_id":"plan_1","created_at":%s,"expires_at":%s,"renewal_period_start":%s,"renewal_period_end":%s,'
        '"status":"%s","valid":%s,"cancel_at_period_end":false,"metadata":%s,"manage_url":"https://whop.com/m/%s"}}',
        seed_type,
        mid,
        mid,
        pl.col("created"),
        t_str,
        pl.col("created"),
        t_str,
        status,
        valid,
        pl.lit("{}"),
        mid,
    )
    v1u = _fmt(
        '{"id":"msg_%s","api_version":"v1","api_version_date":"2025-01-01","type":"%s","timestamp":"%s",'
        '"data":{"id":"mem_%s","status":"%s","created_at":"%s","renewal_period_start":"%s",'
        '"renewal_period_end":null,"cancel_at_period_end":false,"company":{"id":"%s","title":"Demo"},'
        '"user":{"id":"user_%s","username":"member%s","name":"Member %s","email":"u%s@example.com"},'
        '"product":{"id":"prod_1"}},"account_id":"%s"}',
        pl.col("wid"),
        v1_type,
        t_iso,
        mid,
        status,
        _iso("created"),
        _iso("created"),
        pl.col("company"),
        mid,
        mid,
        mid,
        mid,
        pl.col("company"),
    )
    v1p = _fmt(
        '{"id":"msg_%s","api_version":"v1","api_version_date":"2025-06-01","type":"%s","timestamp":"%s",'
        '"data":{"id":"mem_%s","user_id":"user_%s","member_id":"mber_%s","product_id":"prod_1",'
        '"company_id":"%s","status":"%s","created_at":"%s","current_period_start":"%s",'
        '"current_period_end":null,"updated_at":"%s"}}',
        pl.col("wid"),
        v1_type,
        t_iso,
        mid,
        mid,
        mid,
        pl.col("company"),
        status,
        _iso("created"),
        _iso("created"),
        t_iso,
    )
    body = (
        pl.when(pl.col("shape") == 0)
        .then(seed)
        .when(pl.col("shape") == 1)
        .then(v5)
        .when(pl.col("shape") == 2)
        .then(v1u)
        .otherwise(v1p)
    )
    return df.select(body.alias("body")).to_series()


def company_expr(mid: pl.Expr, n_members: int, companies: int) -> pl.Expr:
    """The company of membership ``mid``: ``biz_demo`` for one; else ``biz_c0000`` … in equal, consecutive runs."""
    if companies <= 1:
        return pl.lit("biz_demo")
    per = -(-n_members // companies)
    return pl.concat_str(pl.lit("biz_c"), (mid // per).cast(pl.Utf8).str.pad_start(4, "0"))


def _uniform(idx: pl.Expr, seed: int, modulus: int) -> pl.Expr:
    """Deterministic pseudo-random integers in [0, modulus), one per row index (polars' hash; no numpy)."""
    return (idx.cast(pl.UInt64).hash(seed) % modulus).cast(pl.Int64)


def generate_raw(
    n_members: int,
    n_events: int,
    *,
    start: int = 0,
    count: int | None = None,
    dup_rate: float = 0.03,
    seed: int = 7,
    companies: int = 1,
) -> pl.DataFrame:
    """Raw records (landing's schema) for webhooks ``start … start+count`` of ``n_events``, plus re-deliveries.

    Webhook ``i < n_members`` is membership ``i`` joining; every other one is an access (90%), a leave (4%) or
    another Whop event (6%) of a random membership. Chunks with different ``start`` are independent, so a big
    set can be generated (and cached) piece by piece; ``start`` beyond ``n_events`` gives fresh later events.
    With ``companies`` > 1, membership ``m`` belongs to ``company_of(m, n_members, companies)`` (else all to
    ``biz_demo``); a v5 body names no company, as Whop's does not.
    """
    count = n_events - start if count is None else count
    idx = pl.int_range(start, start + count, dtype=pl.Int64)
    u_kind = _uniform(idx, seed + 4, 100)
    kind_code = pl.when(idx < n_members).then(0).when(u_kind < 90).then(1).when(u_kind < 94).then(2).otherwise(3)
    df = pl.select(
        wid=idx,
        mid=pl.when(idx < n_members).then(idx).otherwise(_uniform(idx, seed, n_members)),
        kind_code=kind_code,
        u_shape=_uniform(idx, seed + 1, 100),
        dt=_uniform(idx, seed + 2, SPAN_S),
        jitter=_uniform(idx, seed + 3, 120),
    )
    base = int(BASE.timestamp())
    # Accesses come from the guide's tooling (and a few v1-shaped mocks); joins/leaves from every shape.
    shape = (
        pl.when(pl.col("kind_code") == 1)
        .then(pl.when(pl.col("u_shape") < 85).then(0).when(pl.col("u_shape") < 95).then(2).otherwise(3))
        .otherwise(
            pl.when(pl.col("u_shape") < 30)
            .then(0)
            .when(pl.col("u_shape") < 60)
            .then(1)
            .when(pl.col("u_shape") < 85)
            .then(2)
            .otherwise(3)
        )
    )
    df = df.with_columns(
        company=company_expr(pl.col("mid"), n_members, companies),
        kind=pl.col("kind_code").replace_strict(list(range(4)), list(KINDS), return_dtype=pl.Utf8),
        shape=shape.cast(pl.Int8),
        created=base + (pl.col("mid") * 7919) % (SPAN_S // 3),
    ).with_columns(
        t=pl.when(pl.col("kind_code") == 0).then(pl.col("created")).otherwise(pl.col("created") + pl.col("dt")),
    )
    bodies = _bodies(df)
    raw = df.select(
        webhook_id=pl.concat_str(pl.lit("wh_"), pl.col("wid").cast(pl.Utf8).str.pad_start(12, "0")),
        signed_at=pl.col("t") + pl.col("jitter"),
        scheme=pl.when(pl.col("shape") == 1).then(pl.lit("legacy")).otherwise(pl.lit("standard")),
    ).with_columns(body=bodies, event_type=bodies.str.extract(r'"(?:action|type)":"([^"]+)"'))
    n_dup = int(count * dup_rate)
    # Re-deliveries: same webhook id and body, signed and received later.
    dup = raw.sample(n_dup, seed=seed + start).with_columns(pl.col("signed_at") + 30)
    raw = pl.concat([raw, dup]).sample(fraction=1.0, shuffle=True, seed=seed + start + 1)
    received = pl.from_epoch(pl.col("signed_at") + 1, time_unit="s").dt.replace_time_zone("UTC")
    return raw.select(
        "webhook_id",
        received.dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ").alias("received_at"),
        "signed_at",
        "scheme",
        "event_type",
        "body",
    )


def to_ndjson(raw: pl.DataFrame) -> bytes:
    """The landing's file format: one JSON raw record per line."""
    return raw.write_ndjson().encode()
