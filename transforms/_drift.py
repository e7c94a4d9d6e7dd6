"""Where Whop's API snapshot and the webhook history disagree (``DRIFT_SCHEMA``): missed or late webhooks.

One row per membership with at least one reason, in this order (comma-separated in ``reason``):
- ``api_only``: the snapshot lists it, no webhook ever mentioned it;
- ``webhook_only``: webhooks mention it (its first fact at or before its company's snapshot), its company's
  snapshot does not list it; a membership whose company is unknown is judged only against the one company of a
  single-company snapshot, and one of a company with no snapshot (never fetched, or its fetch failed) not at
  all: nothing says what its company's list holds;
- ``validity``: the latest webhook validity fact (at or before the snapshot) ≠ the API's (status in
  trialing/active/past_due/completed);
- ``status``: the latest webhook membership status (at or before the snapshot) ≠ the API's status.
A webhook fact newer than the snapshot is not drift: the snapshot simply predates it. The webhook side comes
from the state's webhook-only columns (``webhook_valid``, ``webhook_status``…), never the API-merged ones.
The API side may hold several companies' snapshots (each company's latest, both frames with a ``snapshot``
column naming each row's snapshot): each company is judged against its own.
"""

from __future__ import annotations

import polars as pl

from memberpulse.transforms._facts import api_facts
from memberpulse.transforms._schema import DRIFT_SCHEMA, STATE_SCHEMA


def drift(state: pl.DataFrame, memberships: pl.DataFrame | None, members: pl.DataFrame | None = None) -> pl.DataFrame:
    """Drift between ``state`` (from ``fold``) and one backfill snapshot; empty when there is no snapshot."""
    if memberships is None:
        return pl.DataFrame(schema=DRIFT_SCHEMA)
    api = api_facts(memberships, members)
    if api.height == 0 and state.height == 0:
        return pl.DataFrame(schema=DRIFT_SCHEMA)
    fetched = _fetched_per_company(api)
    both = _side_by_side(state, api).join(fetched, on="wh_company_id", how="left", nulls_equal=True)
    return (
        both.with_columns(reason=pl.concat_str(_reasons(), separator=",", ignore_nulls=True))
        .filter(pl.col("reason").str.len_bytes() > 0)
        .select(
            "membership_id",
            pl.coalesce("company_id", "wh_company_id").alias("company_id"),
            pl.coalesce("user_id", "wh_user_id").alias("user_id"),
            "reason",
            "webhook_valid",
            "api_valid",
            "webhook_status",
            "api_status",
            "webhook_valid_at",
            "webhook_status_at",
            "webhook_last_at",
            "api_fetched_at",
        )
        .sort("membership_id")
        .cast(DRIFT_SCHEMA)
    )


def _side_by_side(state: pl.DataFrame, api: pl.DataFrame) -> pl.DataFrame:
    """Every membership the webhooks or the API know, the webhooks' view beside the API's (full join)."""
    wh = state.select(list(STATE_SCHEMA)).cast(STATE_SCHEMA)
    wh = wh.filter(pl.col("webhook_last_at").is_not_null())
    return wh.select(
        "membership_id",
        pl.col("company_id").alias("wh_company_id"),
        pl.col("user_id").alias("wh_user_id"),
        "webhook_valid",
        "webhook_valid_at",
        "webhook_status",
        "webhook_status_at",
        "webhook_first_at",
        "webhook_last_at",
    ).join(
        api.select(
            "membership_id",
            "company_id",
            "user_id",
            pl.col("valid").alias("api_valid"),
            pl.col("membership_status").alias("api_status"),
            pl.col("fact_at").alias("api_fetched_at"),
        ),
        on="membership_id",
        how="full",
        coalesce=True,
    )


def _fetched_per_company(api: pl.DataFrame) -> pl.DataFrame:
    """When each company's snapshot was fetched, keyed by the webhook side's company (``wh_company_id``). A
    membership of unknown company has a snapshot to be judged against only when there is one company's."""
    fetched = (
        api.filter(pl.col("company_id").is_not_null())
        .group_by("company_id")
        .agg(pl.col("fact_at").max().alias("company_fetched_at"))
        .rename({"company_id": "wh_company_id"})
    )
    if fetched.height == 1:
        fetched = pl.concat([fetched, fetched.with_columns(pl.lit(None, pl.String).alias("wh_company_id"))])
    return fetched.cast({"company_fetched_at": DRIFT_SCHEMA["api_fetched_at"]})


def _reasons() -> list[pl.Expr]:
    """One expression per kind of drift, null where a row does not have it."""
    in_api = pl.col("api_fetched_at").is_not_null()
    in_wh = pl.col("webhook_last_at").is_not_null()
    webhook_only = in_wh & ~in_api & (pl.col("webhook_first_at") <= pl.col("company_fetched_at"))
    validity = (
        in_wh
        & in_api
        & (pl.col("webhook_valid_at") <= pl.col("api_fetched_at"))
        & (pl.col("webhook_valid") != pl.col("api_valid"))
    ).fill_null(False)
    status = (
        in_wh
        & in_api
        & (pl.col("webhook_status_at") <= pl.col("api_fetched_at"))
        & (pl.col("webhook_status") != pl.col("api_status"))
    ).fill_null(False)
    return [
        pl.when(in_api & ~in_wh).then(pl.lit("api_only")),
        pl.when(webhook_only.fill_null(False)).then(pl.lit("webhook_only")),
        pl.when(validity).then(pl.lit("validity")),
        pl.when(status).then(pl.lit("status")),
    ]
