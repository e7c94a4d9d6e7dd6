"""Whop's REST API as memberpulse reads it: a retrying page reader on the official whop-sdk, and the store of
immutable backfill snapshots that the reconcile flow folds in.

Reader: :class:`WhopBackfillClient` (``pages("memberships" | "members")``), configured by a
:class:`WhopClientConfig` (with its :class:`RetryPolicy`) built from Settings.
Store: :func:`latest_snapshots` (each company's newest), :func:`list_snapshots` → :class:`BackfillSnapshot`;
:class:`SnapshotWriter`. Budget: one :class:`RequestLimiter` per API key (:class:`LocalRateLimit`,
:class:`PrefectRateLimit`), sized by :class:`RateBudget`.
Rows: :data:`MEMBERSHIPS_SCHEMA`, :data:`MEMBERS_SCHEMA`, :func:`memberships_batch`, :func:`members_batch`.
"""

from typing import TYPE_CHECKING, Any

from memberpulse.flows.whop._rate_limit import (
    LocalRateLimit,
    PrefectRateLimit,
    RateBudget,
    RequestLimiter,
    credential_name,
    local_limiter,
)
from memberpulse.flows.whop._records import (
    MEMBERS_SCHEMA,
    MEMBERSHIPS_SCHEMA,
    Resource,
    members_batch,
    memberships_batch,
    parse_time,
)
from memberpulse.flows.whop._retry import RetryPolicy, retry_after_seconds
from memberpulse.flows.whop._snapshot import (
    BackfillSnapshot,
    ParquetSink,
    SnapshotWriter,
    backfill_dir,
    clean_stale_tmp,
    company_dir,
    latest_snapshot,
    latest_snapshots,
    list_snapshots,
    read_together,
    snapshot_dirs,
    snapshot_name,
    snapshots_token,
)

if TYPE_CHECKING:
    from memberpulse.flows.whop._client import (
        DEFAULT_WHOP_CLIENT_CONFIG,
        Page,
        RetryEvent,
        WhopBackfillClient,
        WhopClientConfig,
        backfill_skip_reason,
    )

_CLIENT_NAMES = frozenset(
    {
        "DEFAULT_WHOP_CLIENT_CONFIG",
        "Page",
        "RetryEvent",
        "WhopBackfillClient",
        "WhopClientConfig",
        "backfill_skip_reason",
    }
)


def __getattr__(name: str) -> Any:
    """The reader (and whop-sdk) load on first use, so a reconcile run that only reads snapshots skips them."""
    if name in _CLIENT_NAMES:
        from memberpulse.flows.whop import _client

        return getattr(_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_WHOP_CLIENT_CONFIG",
    "MEMBERSHIPS_SCHEMA",
    "MEMBERS_SCHEMA",
    "BackfillSnapshot",
    "LocalRateLimit",
    "Page",
    "ParquetSink",
    "PrefectRateLimit",
    "RateBudget",
    "RequestLimiter",
    "Resource",
    "RetryEvent",
    "RetryPolicy",
    "SnapshotWriter",
    "WhopBackfillClient",
    "WhopClientConfig",
    "backfill_dir",
    "backfill_skip_reason",
    "clean_stale_tmp",
    "company_dir",
    "credential_name",
    "latest_snapshot",
    "latest_snapshots",
    "list_snapshots",
    "local_limiter",
    "members_batch",
    "memberships_batch",
    "parse_time",
    "read_together",
    "retry_after_seconds",
    "snapshot_dirs",
    "snapshot_name",
    "snapshots_token",
]
