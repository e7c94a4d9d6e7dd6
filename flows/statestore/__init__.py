"""The shared state in object storage (``MEMBERPULSE_STORAGE_URL``): the state tree, the lease, the analysts'
copies. With the URL unset nothing here runs and the data dir is the state, as it always was.

Public surface: :func:`shared_state` (wraps every command that writes warehouse state: run, backfill,
recover), :func:`fetch_analytics` (``sql``/``report`` on a machine with only the storage URL), and the keys.
The contracts: docs/architecture.md ("Shared state in object storage").
"""

from __future__ import annotations

from memberpulse.flows.statestore._analytics import (
    LATEST_KEY,
    PARQUET_PREFIX,
    REPORT_KEY,
    analysts_snapshots_dir,
    fetch_analytics,
    publish_analytics,
)
from memberpulse.flows.statestore._lease import LEASE_KEY, Lease
from memberpulse.flows.statestore._session import StateSession, shared_state
from memberpulse.flows.statestore._tree import OBJECTS_PREFIX, TREE_KEY, read_tree

__all__ = [
    "LATEST_KEY",
    "LEASE_KEY",
    "OBJECTS_PREFIX",
    "PARQUET_PREFIX",
    "REPORT_KEY",
    "TREE_KEY",
    "Lease",
    "StateSession",
    "analysts_snapshots_dir",
    "fetch_analytics",
    "publish_analytics",
    "read_tree",
    "shared_state",
]
