"""The lease on the shared state: one run at a time across every host that has the storage URL.

``state/lease.json`` names its holder and when it expires (the holder's clock). It is taken with a create-only
write, or, when the one there has expired or was released, by replacing exactly the version read; so of two
workers that try at once, one gets it and the other is told who holds it until when (exit 3). A thread renews
it every third of ``MEMBERPULSE_STORAGE_LEASE_SECONDS`` while the run works; a holder that died stops renewing
and the lease expires. The lease keeps runs apart; it is not what makes a commit safe: a host whose clock runs
ahead sees a lease expire early and may take it from a live holder. The fence is the state tree's conditional
commit (``_tree.py``): of two runs that started from the same tree, only the first to commit does.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from memberpulse.errors import MemberpulseError, RunInProgress
from memberpulse.flows.state_codec import STATE_LEASE, StateLease, decode_document, encode_document
from memberpulse.storage import ObjectStore

LEASE_KEY: Final = "state/lease.json"
log = logging.getLogger("memberpulse.statestore")


def new_holder_id() -> str:
    """``<host>:<pid>:<8 hex>``: says which process on which host holds the lease."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Lease:
    store: ObjectStore
    command: str
    ttl: timedelta
    holder: str = field(default_factory=new_holder_id)
    version: str | None = None
    lost: str | None = None  # why this holder no longer holds it (taken over, expired unrenewed)
    expires_at: datetime | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _renewer: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lease or raise RunInProgress (exit 3) naming who holds it until when."""
        now = datetime.now(UTC)
        current = self.store.get(LEASE_KEY)
        data = self._document(now)
        if current is None:
            self.version = self.store.put_new(LEASE_KEY, data)
        else:
            held = decode_document(current.data, STATE_LEASE, path=Path(LEASE_KEY))
            if not held.released and datetime.fromisoformat(held.expires_at) > now:
                raise _held_by(held)
            self.version = self.store.replace(LEASE_KEY, data, current.version)
        if self.version is None:  # another worker wrote it between our read and our write
            again = self.store.get(LEASE_KEY)
            if again is None:
                raise RunInProgress("another worker took the state lease and let it go at the same moment")
            raise _held_by(decode_document(again.data, STATE_LEASE, path=Path(LEASE_KEY)))
        self.expires_at = now + self.ttl
        self._renewer = threading.Thread(target=self._renew_until_stopped, name="state-lease", daemon=True)
        self._renewer.start()

    def check_held(self) -> None:
        """Before a commit: a holder that knows it lost the lease commits nothing (the tree's fence stays)."""
        if self.lost is not None:
            raise RunInProgress(f"this run lost the state lease ({self.lost}); it committed nothing")

    def release(self) -> None:
        """Stop renewing and mark the lease released, only if it is still this holder's version."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.version is None or self.lost is not None:
            return
        try:
            released = StateLease(
                holder=self.holder, command=self.command, acquired_at=_now_text(), expires_at=_now_text(),
                released=True,
            )  # fmt: skip
            self.store.replace(LEASE_KEY, encode_document(STATE_LEASE, released), self.version)
        except MemberpulseError as exc:  # it expires by itself
            log.warning("the state lease was not released (%s); it expires by itself", exc)

    def _renew_until_stopped(self) -> None:
        interval = self.ttl.total_seconds() / 3
        while not self._stop.wait(interval):
            now = datetime.now(UTC)
            try:
                renewed = self.store.replace(LEASE_KEY, self._document(now), self.version or "")
            except MemberpulseError as exc:  # the store may heal before the lease runs out
                if self.expires_at is not None and now >= self.expires_at:
                    self.lost = f"not renewed before it expired: {exc}"
                    return
                continue
            if renewed is None:
                self.lost = "another worker took it over after it expired unrenewed"
                return
            self.version, self.expires_at = renewed, now + self.ttl

    def _document(self, now: datetime) -> bytes:
        lease = StateLease(
            holder=self.holder,
            command=self.command,
            acquired_at=now.isoformat(),
            expires_at=(now + self.ttl).isoformat(),
        )
        return encode_document(STATE_LEASE, lease)


def _held_by(held: StateLease) -> RunInProgress:
    return RunInProgress(
        f"another worker holds the shared state's lease: {held.holder} ({held.command}) until {held.expires_at}",
        hint="runs never overlap; run again once that one has finished (a worker that died lets it expire)",
    )


def _now_text() -> str:
    return datetime.now(UTC).isoformat()
