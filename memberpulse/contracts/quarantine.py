"""The quarantine entry: one NDJSON line per refused webhook, written by the landing, read by the flows.

Diagnostics, not data: the request's metadata and at most the first 4 KiB of its body. Only an allow-list of
headers is kept, and of the signature headers only their names (a signature is never stored). Each entry also
carries ``reason_count``: how many refusals with its reason the directory has counted so far, this one
included (every landing process, restarts included), so the newest entry of a reason says how many there were
even after older ones were rotated out.

Files, each append-only and never rewritten (a reader keeps a byte offset per file): the first refusal of each
reason in ``first-of-each-reason.ndjson`` (:data:`FIRST_OF_EACH_REASON`, never removed), every other one in
``<writer>-<seq>.ndjson`` files of one landing process each (:func:`quarantine_path`), whole files of which the
landing removes, oldest first, to stay under its cap. A removed file is simply gone; a name is never reused.
The per-reason counts live in ``reason-counts.txt`` (:data:`REASON_COUNTS`, not an entry file).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import orjson

BODY_PREFIX_BYTES: Final = 4096
KEPT_HEADERS: Final = ("webhook-id", "webhook-timestamp", "content-type", "content-length", "user-agent")
SIGNATURE_HEADERS: Final = ("webhook-signature", "x-whop-signature")
_HEADER_CHARS: Final = 200

#: Quarantine files relative to the quarantine directory (what a reader globs): both kinds of entry file.
QUARANTINE_GLOB: Final = "*.ndjson"
#: The first refusal of each reason, kept whatever the cap (the landing bounds this file by itself).
FIRST_OF_EACH_REASON: Final = "first-of-each-reason.ndjson"
#: Refusals counted per reason: one fixed-width line each, ``<16-digit count> <status> <reason>``.
REASON_COUNTS: Final = "reason-counts.txt"


def quarantine_path(quarantine_dir: Path, writer: str, seq: int = 1) -> Path:
    """File number ``seq`` of landing process ``writer``; matches :data:`QUARANTINE_GLOB`."""
    return quarantine_dir / f"{writer}-{seq:06d}.ndjson"


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    received_at: str | None
    status: int | None
    reason: str | None
    remote: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    signature_headers: tuple[str, ...] = ()
    body_bytes: int | None = None
    body_prefix: str | None = None
    reason_count: int | None = None  # absent in entries written before it existed

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get("webhook-id")


def encode_quarantine_entry(
    *,
    received_at: datetime,
    status: int,
    reason: str,
    remote: str | None,
    headers: Mapping[str, str],
    body_bytes: int,
    body_prefix: bytes,
    reason_count: int | None = None,
) -> bytes:
    """One complete quarantine line (with its ``\\n``) from the request as received (all its headers)."""
    entry = {
        "received_at": received_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "status": status,
        "reason": reason,
        "remote": remote,
        "headers": {name: headers[name][:_HEADER_CHARS] for name in KEPT_HEADERS if name in headers},
        "signature_headers": [name for name in SIGNATURE_HEADERS if name in headers],
        "body_bytes": body_bytes,
        "body_prefix": body_prefix[:BODY_PREFIX_BYTES].decode("utf-8", "backslashreplace"),
        "reason_count": reason_count,
    }
    return orjson.dumps(entry) + b"\n"


def decode_quarantine_entry(line: bytes) -> QuarantineEntry | None:
    """The entry on one line, or None for a torn or foreign line (diagnostics are never worth failing over)."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    headers = doc.get("headers")
    count = doc.get("reason_count")
    return QuarantineEntry(
        received_at=doc.get("received_at"),
        status=doc.get("status"),
        reason=doc.get("reason"),
        remote=doc.get("remote"),
        headers=headers if isinstance(headers, dict) else {},
        signature_headers=tuple(doc.get("signature_headers") or ()),
        body_bytes=doc.get("body_bytes"),
        body_prefix=doc.get("body_prefix"),
        reason_count=count if type(count) is int else None,
    )
