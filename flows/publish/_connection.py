"""Postgres connections that cannot hold a publish: TCP keepalives, a TCP user timeout, and a deadline on every
wait for the server.

libpq itself waits on its socket for as long as it takes, and ``statement_timeout`` is no help when the server
never sees the bytes. So, from the socket up:

- TCP keepalives (``keepalives_idle``/``_interval``/``_count``): a peer that vanished while we wait for an answer
  (host gone, NAT state dropped) is noticed by the kernel, not after hours;
- ``tcp_user_timeout`` (libpq 12 and later): data the peer does not acknowledge fails the connection instead of
  being retransmitted for a quarter of an hour;
- a deadline on every wait (psycopg does all its I/O through ``Connection.wait``): no exchange may stay silent
  longer than the statement timeout plus the connect timeout (an honest server has answered, or cancelled the
  statement, by then) nor past the publish's overall deadline. This also catches what the kernel cannot: a peer
  whose TCP stack still acknowledges (a proxy, a pooler, a half-partitioned path) but forwards nothing.

A connection that missed its deadline is closed on the spot (its protocol state is unknown); ``stalled`` says why.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg.abc import PQGen
from psycopg.rows import TupleRow

from memberpulse.flows.publish._deadline import Deadline

RV = TypeVar("RV")
_TCP_USER_TIMEOUT_LIBPQ = 120000  # libpq 12 knows tcp_user_timeout; an older one refuses the whole DSN
_KEEPALIVE_PROBES = 3


def tcp_options(timeout_seconds: float) -> dict[str, Any]:
    """libpq's TCP options for a target allowed ``timeout_seconds`` of silence: keepalive probes start after that
    much idle time, and so many unanswered probes, or unacknowledged data for that long, fail the connection.
    (Whole seconds and milliseconds: a unit conversion, at least one unit, never 0 = "the system default".)"""
    seconds = max(1, round(timeout_seconds))
    options: dict[str, Any] = {
        "keepalives": 1,
        "keepalives_idle": seconds,
        "keepalives_interval": max(1, round(seconds / _KEEPALIVE_PROBES)),
        "keepalives_count": _KEEPALIVE_PROBES,
    }
    if pq.version() >= _TCP_USER_TIMEOUT_LIBPQ:
        options["tcp_user_timeout"] = seconds * 1000
    return options


class GuardedConnection(psycopg.Connection[TupleRow]):
    """A psycopg connection whose waits for the server end at ``min(now + window, deadline)``; see the module
    doc. Unguarded (no :meth:`guard` call) it behaves as a plain connection."""

    deadline: Deadline | None = None
    window: float = 0.0  # seconds one exchange may take (set by guard)
    stalled: str | None = None  # why it was abandoned

    def guard(self, deadline: Deadline, window: float) -> None:
        self.deadline, self.window = deadline, window

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        deadline = self.deadline
        if deadline is None:
            return super().wait(gen, interval, timeout)
        if self.stalled is not None:  # psycopg's clean-up after the stall (end of COPY, rollback): fail at once
            raise psycopg.OperationalError(f"the connection was abandoned: {self.stalled}")
        allowed = deadline.within(self.window if timeout is None else min(self.window, timeout))
        if allowed <= 0:
            self._abandon(f"no answer within the publish deadline ({deadline.seconds:g} s)")
        started = time.monotonic()
        try:
            return super().wait(gen, interval, allowed)
        except psycopg.OperationalError:
            if time.monotonic() - started >= allowed:  # psycopg's wait timed out: the deadline or the window
                self._abandon(
                    f"no answer within the publish deadline ({deadline.seconds:g} s)"
                    if deadline.passed()
                    else f"no answer for {allowed:g} s (longer than a statement may run: the server does not "
                    "get our bytes, or we do not get its answer)"
                )
            raise

    def _abandon(self, why: str) -> None:
        self.stalled = why
        self.close()
        raise psycopg.OperationalError(why)
