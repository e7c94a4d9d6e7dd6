"""A webhook failure, from the run that finds it to the published ``webhook_failures`` table: the one definition
of its row at each stage, from which every schema and frame along the way is derived.

1. **Found** (:data:`REJECT_SCHEMA`): what a reconcile run could not turn into an event — a raw record the
   parser refused, an unreadable line (no webhook id; ``source_file`` and ``source_offset`` say where it lies),
   or a line of the landing's quarantine log (no source). ``received_at`` is the text as written and ``body`` the
   body (or the whole line) cut to :data:`REJECT_BODY_BYTES`. Staged with the run (``warehouse/reconcile/rejects``).
2. **Logged** (:data:`FAILURE_RECORD_SCHEMA`): one failure, keyed (a line without an id by the sha256 of its
   excerpt) and dated in UTC (an undated one by the run that found it), its body cut to
   :data:`~memberpulse.contracts.tables.BODY_PREFIX_CHARS`, with the company its body names when the raw store
   held it (a signed or recovered webhook; a landing refusal is unverified, so a forged body never names one).
   The warehouse's append-only failure log (``warehouse/published/webhook_failures.parquet``) holds these, and
   every target is sent from it; a log written before ``company_id`` existed reads with it null.
3. **Published** (:data:`~memberpulse.contracts.tables.WEBHOOK_FAILURES`): the log summarised per
   (``webhook_id``, ``reason``), with the first and last time seen.

The logged row takes its shared columns from the published table, so a type changes in one place.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from memberpulse.contracts.tables import WEBHOOK_FAILURES

#: Largest body excerpt a found failure keeps, in bytes (UTF-8, never cutting a character).
REJECT_BODY_BYTES: Final = 4096

REJECT_SCHEMA: Final = pl.Schema(
    {
        "webhook_id": pl.String(),  # null for a line that could not be read
        "received_at": pl.String(),  # as written in the raw record (or the quarantine entry)
        "event_type": pl.String(),
        "reason": pl.String(),  # not null
        "body": pl.String(),  # cut to REJECT_BODY_BYTES
        "source_file": pl.String(),  # the segment, relative to the landing directory; null for a landing refusal
        "source_offset": pl.Int64(),  # the line's byte offset in that segment
    }
)


def _published(name: str) -> pl.DataType:
    return WEBHOOK_FAILURES.column(name).dtype


FAILURE_RECORD_SCHEMA: Final = pl.Schema(
    {
        "webhook_id": _published("webhook_id"),  # not null
        "event_type": _published("event_type"),
        "reason": _published("reason"),  # not null
        "received_at": _published("first_seen"),  # not null: summarised into first_seen / last_seen
        "body_prefix": _published("body_prefix"),
        "company_id": _published("company_id"),
    }
)
#: What a logged failure must carry (the published table's key, and the time it is summarised by).
FAILURE_RECORD_REQUIRED: Final = ("webhook_id", "reason", "received_at")
