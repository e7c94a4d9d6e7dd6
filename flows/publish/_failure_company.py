"""The Whop company a failing webhook belongs to (``webhook_failures.company_id``), so that row level security
can show each company its own failures.

Only a body the raw store held is read: the landing stored it after checking its signature (or recovery fetched
it through Whop's authenticated API). A failure found there that has a body to read is one the parser refused,
and its reason says so (the parser's reason prefixes are stable: ``memberpulse.transforms``). Any other failure
gets no company — above all a landing refusal (``landing 403: …``): its signature did not check out, so its body
could name any company and put text of the sender's choosing in that company's view.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
import polars as pl

# The parser's reasons for a record of the raw store whose body is a JSON object: the only bodies read.
PARSER_REASONS: Final = ("missing data.id", "unparsable ")


def company_named_by(body: str | None) -> str | None:
    """The company ``body`` names: ``data.company_id``, ``data.company.id``, the envelope's ``company_id`` or
    ``account_id``, the first that is a non-empty string (the parser's order for events, envelope last).

    None when it names none, or is not a whole JSON object (a body cut to its excerpt no longer parses)."""
    if not body:
        return None
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    data = document.get("data")
    data = data if isinstance(data, dict) else {}
    company = data.get("company")
    candidates = (
        data.get("company_id"),
        company.get("id") if isinstance(company, dict) else None,
        document.get("company_id"),
        document.get("account_id"),
    )
    return next((c for c in candidates if isinstance(c, str) and c), None)


def failure_company(rejects: pl.DataFrame) -> pl.Expr:
    """``company_id`` for failures as found (``REJECT_SCHEMA``): what the body names when the parser refused a
    record of the raw store, else null."""
    if not {"body", "reason"} <= set(rejects.columns):
        return pl.lit(None, pl.Utf8).alias("company_id")
    from_parser = pl.any_horizontal(pl.col("reason").cast(pl.Utf8).str.starts_with(p) for p in PARSER_REASONS)
    named = pl.col("body").cast(pl.Utf8).map_elements(company_named_by, return_dtype=pl.Utf8)
    return pl.when(from_parser).then(named).alias("company_id")
