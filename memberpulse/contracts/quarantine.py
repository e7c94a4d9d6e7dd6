"""The quarantine entry: one NDJSON line per refused webhook, written by the landing, read by the flows.

Diagnostics, not data: the request's metadata and at most the first 4 KiB of its body. Only an allow-list of
headers is kept, and of the signature headers only their names (a signature is never stored). One file per
landing process, ``<quarantine_dir>/<writer>.ndjson``, append-only.
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

#: Quarantine files relative to the quarantine directory (what a reader globs).
QUARANTINE_GLOB: Final = "*.ndjson"


def quarantine_path(quarantine_dir: Path, writer: str) -> Path:
    return quarantine_dir / f"{writer}.ndjson"


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
    return QuarantineEntry(
        received_at=doc.get("received_at"),
        status=doc.get("status"),
        reason=doc.get("reason"),
        remote=doc.get("remote"),
        headers=headers if isinstance(headers, dict) else {},
        signature_headers=tuple(doc.get("signature_headers") or ()),
        body_bytes=doc.get("body_bytes"),
        body_prefix=doc.get("body_prefix"),
    )
