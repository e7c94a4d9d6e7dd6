"""The raw record: one NDJSON line per accepted webhook, as the landing stores it and the flows read it.

Written by the landing before it answers 200 (one line, ``\\n``-terminated, keys in this order)::

    {"webhook_id": "msg_…", "received_at": "2026-11-27T12:00:00.123456Z", "signed_at": 1796040000,
     "scheme": "standard", "event_type": "membership.went_valid", "body": "<the exact body text>"}

``webhook_id``, ``received_at`` and ``body`` are required non-empty strings; ``signed_at`` is the signature's
Unix time (integer or null), ``scheme`` how the record arrived (:data:`SCHEMES`, or null), ``event_type`` the
body's ``type`` or ``action`` (or null). Records live in segment files
``<landing_dir>/dt=YYYY-MM-DD/<writer>-<seq>.ndjson``, one writer per process, append-only; a reader takes whole
lines only.

Scheme ``delivery_log``: the record was recovered from Whop's delivery log through the authenticated API (no
signature, so ``signed_at`` is null). ``webhook_id`` is the envelope's ``id`` (Whop's ``webhook-id``),
``received_at`` when recovery stored it, ``body`` the delivery's ``request_body`` as compact JSON (what Whop
POSTs). Recovery writes its own segment files (writer name starting ``delivery-log-``), whole and fsync'd,
and the reconcile reads them like any other and dedupes by webhook id.

Segments past the retention window are compacted into the raw archive, one zstd Parquet file per UTC day:
``<data_dir>/archive/landing/dt=YYYY-MM-DD.parquet`` with the columns of :data:`RAW_ARCHIVE_SCHEMA`, one row per
line exactly as it was on disk (its ``\\n`` included), sorted by (``source_file``, ``source_offset``). Each row
group holds lines of one segment only, so the segment's bytes ``[start, end)`` are the concatenation of its
rows' ``line`` values.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import orjson
import polars as pl

RAW_RECORD_SCHEMA: Final = pl.Schema(
    {
        "webhook_id": pl.String(),
        "received_at": pl.String(),
        "signed_at": pl.Int64(),
        "scheme": pl.String(),
        "event_type": pl.String(),
        "body": pl.String(),
    }
)
REQUIRED_FIELDS: Final = ("webhook_id", "received_at", "body")

#: ``standard``/``legacy``: the landing verified that signature scheme; ``delivery_log``: recovered from Whop's
#: delivery log through the authenticated API.
SCHEME_STANDARD: Final = "standard"
SCHEME_LEGACY: Final = "legacy"
SCHEME_DELIVERY_LOG: Final = "delivery_log"
SCHEMES: Final = (SCHEME_STANDARD, SCHEME_LEGACY, SCHEME_DELIVERY_LOG)
#: The writer name prefix of recovery's segment files.
DELIVERY_LOG_WRITER: Final = "delivery-log"

#: Segment files relative to the landing directory (what a reader globs).
SEGMENT_GLOB: Final = "dt=*/*.ndjson"

#: One compacted line: the segment it came from (relative to the landing directory), its byte offset there, and
#: its exact bytes including the ending newline.
RAW_ARCHIVE_SCHEMA: Final = pl.Schema({"source_file": pl.String(), "source_offset": pl.Int64(), "line": pl.Binary()})
#: Archive files relative to the archive directory.
ARCHIVE_GLOB: Final = "dt=*.parquet"


class InvalidRawRecord(ValueError):
    """A line that is not a raw record; the message says what is wrong with it."""


def received_at_text(received_at: datetime) -> str:
    """``received_at`` as stored: UTC, microseconds, ``Z``."""
    return received_at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def encode_raw_record(
    webhook_id: str, received_at: datetime, signed_at: int | None, scheme: str | None, event_type: str | None,
    body: str,
) -> bytes:  # fmt: skip
    """One complete raw-record line (with its ``\\n``). On the landing's hot path: one dict, one dumps."""
    return (
        orjson.dumps(
            {
                "webhook_id": webhook_id,
                "received_at": received_at_text(received_at),
                "signed_at": signed_at,
                "scheme": scheme,
                "event_type": event_type,
                "body": body,
            }
        )
        + b"\n"
    )


def decode_raw_record(line: bytes) -> dict[str, Any]:
    """The fields of one raw-record line (keys of :data:`RAW_RECORD_SCHEMA`); InvalidRawRecord otherwise."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidRawRecord(f"line is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InvalidRawRecord("line is not a JSON object")
    for name in REQUIRED_FIELDS:
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise InvalidRawRecord(f"{name} missing or not a string")
    signed_at = doc.get("signed_at")
    if signed_at is not None and (isinstance(signed_at, bool) or not isinstance(signed_at, int)):
        raise InvalidRawRecord("signed_at is not an integer")
    if not -(2**62) < (signed_at or 0) < 2**62:
        raise InvalidRawRecord("signed_at out of range")
    for name in ("scheme", "event_type"):
        if doc.get(name) is not None and not isinstance(doc[name], str):
            raise InvalidRawRecord(f"{name} is not a string")
    return {name: doc.get(name) for name in RAW_RECORD_SCHEMA}


def segment_dir(landing_dir: Path, day: date) -> Path:
    """The day partition a record received on ``day`` (UTC) is written to."""
    return landing_dir / f"dt={day.isoformat()}"


def segment_path(landing_dir: Path, day: date, writer: str, seq: int) -> Path:
    """Segment number ``seq`` of ``writer`` for ``day``; matches :data:`SEGMENT_GLOB`."""
    return segment_dir(landing_dir, day) / f"{writer}-{seq:06d}.ndjson"


def segment_day(relpath: str) -> date | None:
    """The UTC day of a segment from its partition (``dt=YYYY-MM-DD/...``), or None for a foreign path."""
    head = relpath.split("/", 1)[0]
    try:
        return date.fromisoformat(head.removeprefix("dt=")) if head.startswith("dt=") else None
    except ValueError:
        return None


def raw_archive_dir(landing_dir: Path) -> Path:
    """Where the segments of ``landing_dir`` are compacted to (a sibling, never globbed as segments)."""
    return landing_dir.parent / "archive" / landing_dir.name


def archive_path(archive_dir: Path, day: date) -> Path:
    """The archive file of the lines received on ``day`` (UTC); matches :data:`ARCHIVE_GLOB`."""
    return archive_dir / f"dt={day.isoformat()}.parquet"
