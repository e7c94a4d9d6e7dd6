"""The overall deadline of one publish call (``MEMBERPULSE_PUBLISH_DEADLINE_SECONDS``): connecting, every
statement or request, every retry and every backoff wait must fit in it.

Server-side limits (``statement_timeout``) cannot end a publish whose bytes never reach the server, and per-phase
client timeouts restart with every read that gets a byte and every retry: only a clock that runs from the start
of the call bounds the whole of it. Past it the publish is abandoned as transient (the run exits 3 and the next
one re-sends everything pending).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from memberpulse.errors import PublishUnavailable

DEADLINE_HINT = (
    "check the network path to the target and its load (it stopped answering: a partition, or an overloaded "
    "server?); if a large publish needs longer, raise MEMBERPULSE_PUBLISH_DEADLINE_SECONDS"
)


class Deadline:
    """``seconds`` from now, on a monotonic clock."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        """Seconds left; zero or less once it has passed."""
        return self._end - self._clock()

    def passed(self) -> bool:
        return self.remaining() <= 0

    def within(self, seconds: float) -> float:
        """``seconds``, or what is left of the deadline when that is less (never below zero)."""
        return max(0.0, min(seconds, self.remaining()))

    def unavailable(self, action: str, where: str) -> PublishUnavailable:
        """The error for a publish abandoned at the deadline (transient: exit 3)."""
        return PublishUnavailable(
            f"{action} at {where}: no answer within the publish deadline ({self.seconds:g} s)", hint=DEADLINE_HINT
        )
