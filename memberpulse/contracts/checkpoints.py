"""Named checkpoints of a run: places where everything before is durable and nothing after has happened yet.

A run announces each one as a Python audit event (``sys.audit("memberpulse.checkpoint", name)``), which costs
next to nothing when no audit hook is installed, and changes nothing when one is. Tooling may listen with
``sys.addaudithook``; the crash-safety tests do, to kill a run exactly there (``memberpulse.testing.kill_points``).
"""

from __future__ import annotations

import sys
from typing import Final, Literal

AUDIT_EVENT: Final = "memberpulse.checkpoint"

Checkpoint = Literal[
    "ingest_before_commit",
    "after_ingest",
    "publish_before_commit",
    "snapshot_before_swap",
    "archive_before_unlink",
    "lease_taken",
    "state_before_commit",
]
#: ``after_ingest``: state committed, nothing published; ``publish_before_commit``: rows sent, transaction
#: open; ``snapshot_before_swap``: new DuckDB file written, ``latest.duckdb`` not yet replaced;
#: ``archive_before_unlink``: a day's archive file written, its NDJSON segments not yet removed;
#: ``lease_taken``: (storage URL set) the shared state's lease held, the tree not yet read; ``state_before_commit``:
#: the command's work done on the cache, the state tree not yet committed.
CHECKPOINTS: Final[tuple[Checkpoint, ...]] = (
    "ingest_before_commit",
    "after_ingest",
    "publish_before_commit",
    "snapshot_before_swap",
    "archive_before_unlink",
)
#: Reached only with ``MEMBERPULSE_STORAGE_URL`` set (the shared state's lease and commit).
SHARED_STATE_CHECKPOINTS: Final[tuple[Checkpoint, ...]] = ("lease_taken", "state_before_commit")


def checkpoint(name: Checkpoint) -> None:
    """Announce that the run reached ``name``."""
    sys.audit(AUDIT_EVENT, name)
