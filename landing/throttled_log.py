"""Warnings an outsider can trigger at will (forged requests, slow connections), at most one line per interval.

The first event of a kind is logged at once; repeats within ``interval_seconds`` are only counted, and the
count rides on the next line of that kind. Log volume stays bounded under a flood while nothing goes unsaid
(``/metrics`` still counts every request).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class ThrottledLog:
    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval_seconds
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> bool:
        """Log ``message % args`` unless a ``kind`` line went out less than the interval ago; True if logged."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += f" (and {suppressed} more like it in the last {self._interval:g} s)"
        self._logger.warning(message, *args)
        return True
