"""From whop-sdk models to Arrow columns in the backfill snapshot schemas (all times UTC microseconds).

A page is turned into columns right away, so only one page of pydantic objects is alive at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa

from memberpulse.errors import InvalidInput

Resource = Literal["memberships", "members"]

_TS = pa.timestamp("us", tz="UTC")

MEMBERSHIPS_SCHEMA = pa.schema(
    [
        pa.field("membership_id", pa.string(), nullable=False),
        pa.field("company_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string()),
        pa.field("member_id", pa.string()),
        pa.field("product_id", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("created_at", _TS, nullable=False),
        pa.field("updated_at", _TS),
        pa.field("canceled_at", _TS),
        pa.field("username", pa.string()),
        pa.field("name", pa.string()),
        pa.field("email", pa.string()),
        pa.field("fetched_at", _TS, nullable=False),
    ]
)

MEMBERS_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string()),
        pa.field("username", pa.string()),
        pa.field("name", pa.string()),
        pa.field("email", pa.string()),
        pa.field("status", pa.string()),
        pa.field("joined_at", _TS),
        pa.field("last_accessed_at", _TS),
        pa.field("most_recent_action_at", _TS),
        pa.field("fetched_at", _TS, nullable=False),
    ]
)


def parse_time(value: Any, *, field: str) -> datetime | None:
    """Whop's ISO 8601 text (or a datetime) as an aware UTC datetime; naive values are taken as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise InvalidInput(f"Whop sent {field}={value!r}, which is not an ISO 8601 time", value=value) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _extra(model: Any, key: str) -> Any:
    extra = getattr(model, "model_extra", None)
    return extra.get(key) if isinstance(extra, Mapping) else None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def memberships_batch(items: Sequence[Any], *, company_id: str, fetched_at: datetime) -> pa.RecordBatch:
    """``whop_sdk.Membership`` models → a batch in :data:`MEMBERSHIPS_SCHEMA`.

    ``Membership`` (2.6.0) has no user object; Whop's list items carry ``user {id, username, name, email}``,
    which the SDK keeps as an extra. When it is missing the snapshot writer fills these from the members list.
    """
    cols: dict[str, list[Any]] = {name: [] for name in MEMBERSHIPS_SCHEMA.names}
    for m in items:
        user = _extra(m, "user")
        user = user if isinstance(user, Mapping) else {}
        account = getattr(m, "account", None)
        cols["membership_id"].append(m.id)
        cols["company_id"].append(getattr(account, "id", None) or company_id)
        cols["user_id"].append(_str(m.user_id or user.get("id")))
        cols["member_id"].append(_str(m.member_id))
        cols["product_id"].append(_str(m.product_id))
        cols["status"].append(str(m.status))
        cols["created_at"].append(parse_time(m.created_at, field="membership.created_at"))
        cols["updated_at"].append(parse_time(m.updated_at, field="membership.updated_at"))
        cols["canceled_at"].append(parse_time(m.canceled_at, field="membership.canceled_at"))
        cols["username"].append(_str(user.get("username")))
        cols["name"].append(_str(user.get("name")))
        cols["email"].append(_str(user.get("email")))
    cols["fetched_at"] = [fetched_at] * len(items)
    return pa.RecordBatch.from_pydict(cols, schema=MEMBERSHIPS_SCHEMA)


def members_batch(items: Sequence[Any], *, fetched_at: datetime) -> pa.RecordBatch:
    """``whop_sdk.Member`` models → a batch in :data:`MEMBERS_SCHEMA`. ``last_accessed_at`` is a declared
    field of ``Member`` in 2.6.0; older list-item models kept it only as an extra, so both are read."""
    cols: dict[str, list[Any]] = {name: [] for name in MEMBERS_SCHEMA.names}
    for m in items:
        user = getattr(m, "user", None)
        last_accessed = getattr(m, "last_accessed_at", None) or _extra(m, "last_accessed_at")
        cols["member_id"].append(m.id)
        cols["user_id"].append(_str(getattr(user, "id", None)))
        cols["username"].append(_str(getattr(user, "username", None)))
        cols["name"].append(_str(getattr(user, "name", None)))
        cols["email"].append(_str(getattr(m, "email", None)))
        cols["status"].append(_str(m.status))
        cols["joined_at"].append(parse_time(getattr(m, "joined_at", None), field="member.joined_at"))
        cols["last_accessed_at"].append(parse_time(last_accessed, field="member.last_accessed_at"))
        cols["most_recent_action_at"].append(
            parse_time(getattr(m, "most_recent_action_at", None), field="member.most_recent_action_at")
        )
    cols["fetched_at"] = [fetched_at] * len(items)
    return pa.RecordBatch.from_pydict(cols, schema=MEMBERS_SCHEMA)
