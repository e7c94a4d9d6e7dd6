"""One command's work on the shared state: lease, fetch, work on the cache, commit, publish for analysts."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta

from memberpulse.contracts.checkpoints import checkpoint
from memberpulse.flows.statestore._analytics import publish_analytics
from memberpulse.flows.statestore._lease import Lease
from memberpulse.flows.statestore._tree import (
    LATEST_SNAPSHOT,
    CommitResult,
    FetchResult,
    collect_garbage,
    commit_tree,
    fetch_tree,
    read_tree,
)
from memberpulse.settings import Settings
from memberpulse.storage import ObjectStore, open_store

log = logging.getLogger("memberpulse.statestore")
# A command inside another's session (same context: a caller wrapping a run) reuses it; two sessions on two
# threads of one process each take the lease, as two hosts would.
_inside_session: ContextVar[bool] = ContextVar("memberpulse_state_session", default=False)


@dataclass
class StateSession:
    """What the session did, for the caller's report and the request-cost figures."""

    store: ObjectStore
    command: str
    fetched: FetchResult
    committed: CommitResult | None = None
    analytics: list[str] = field(default_factory=list)

    @property
    def requests(self) -> Counter[str]:
        return self.store.requests


@contextmanager
def shared_state(settings: Settings, command: str, *, write: bool = True) -> Iterator[StateSession | None]:
    """With ``MEMBERPULSE_STORAGE_URL`` set: take the lease (``write``), make the cache equal to the state tree,
    let the command work on it, then upload and commit what it changed and, when ``command`` is a run, publish
    the analysts' copies. An exception from the command commits nothing. Unset, or called within another
    session (same thread or context): nothing, None."""
    store = open_store(settings)
    if store is None or _inside_session.get():
        yield None
        return
    lease = Lease(store, command, timedelta(seconds=settings.storage_lease_seconds)) if write else None
    if lease is not None:
        lease.acquire()
    entered = _inside_session.set(True)
    try:
        checkpoint("lease_taken")
        base = read_tree(store)
        session = StateSession(store, command, fetch_tree(store, settings.data_dir, base))
        # The raw side's call site: memberpulse.flows.raw.remote.pull_raw runs inside ingest (and recover).
        yield session
        if lease is not None:
            lease.check_held()
            checkpoint("state_before_commit")
            session.committed = commit_tree(
                store, settings.data_dir, base, run_id=str(uuid.uuid4()), command=command, holder=lease.holder
            )
            if session.committed.version is not None:
                _after_commit(settings, store, session)
    finally:
        _inside_session.reset(entered)
        if lease is not None:
            lease.release()


def _after_commit(settings: Settings, store: ObjectStore, session: StateSession) -> None:
    committed = session.committed.tree if session.committed is not None else None
    if committed is None:
        return
    if session.command == "run":
        latest = committed.files.get(LATEST_SNAPSHOT)
        snapshot_object = latest.key if latest is not None else None
        session.analytics = publish_analytics(store, settings.snapshots_dir, snapshot_object=snapshot_object)
    garbage = collect_garbage(store, committed, grace=timedelta(seconds=settings.storage_gc_grace_seconds))
    if garbage:
        log.info("state objects no tree references, deleted: %d", garbage)
