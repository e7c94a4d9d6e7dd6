"""Tell Prefect that webhooks landed, so the ``reconcile`` deployment's trigger starts a run within a second.

The landing emits one Prefect event, ``memberpulse.webhook.landed`` on the resource
``memberpulse.landing.<writer>``, at most once per ``interval`` however many webhooks arrive; prefect.yaml's
deployment trigger turns it into a reconcile run. A ``trailing`` event follows a few seconds after the last
webhook of a burst, so a webhook that lands just as a run is finishing never waits for the schedule.

Nothing here is on the request path. The raw store's flush callback calls :meth:`RunSignal.notify` (set a flag,
wake a waiter: no allocation, no I/O) after the batch's waiters are released, so the 200s go out first; a
background task does the rest. Prefect is imported once, in a thread, when that task starts; every emit has a
short timeout, and a Prefect API that is down or slow only makes the sender back off (the cron schedule and the
next successful signal catch up). Without ``PREFECT_API_URL`` the signal is off and says so once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import time
from typing import Any

log = logging.getLogger("landing")

EVENT = "memberpulse.webhook.landed"
RESOURCE_PREFIX = "memberpulse.landing."


class RunSignal:
    """Coalesces "webhooks were stored" into at most one Prefect event per ``interval`` seconds."""

    def __init__(
        self,
        *,
        writer: str,
        enabled: bool,
        api_url: str | None,
        interval: float = 1.0,
        trailing: float = 3.0,
        timeout: float = 3.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.writer = writer
        self.active = enabled and bool(api_url)
        self._api_url = api_url
        self._interval = interval
        self._trailing = trailing
        self._timeout = timeout
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self._landed = 0  # webhooks stored since the last event sent
        #: Events sent and failures, for tests and diagnostics.
        self.sent = 0
        self.failures = 0
        self._down = False
        self._prefect: Any = None
        if not enabled:
            log.info("[Webhook] Run signal off (MEMBERPULSE_RUN_SIGNAL=false): reconcile runs on its schedule")
        elif not api_url:
            log.info("[Webhook] No PREFECT_API_URL: no run signal is sent; reconcile runs on its schedule")

    def notify(self, stored: int = 1) -> None:
        """``stored`` webhooks were made durable. Cheap and synchronous: safe on the request path."""
        if self.active:
            self._landed += stored
            self._wake.set()

    def start(self) -> None:
        if self.active and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="run-signal")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_client()

    # --- background task -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            self._prefect = await asyncio.to_thread(_import_prefect_events)
        except Exception as exc:  # a broken Prefect install must not take the landing down
            log.error("[Webhook] Run signal off: Prefect's events client does not load (%s)", exc)
            return
        while True:
            await self._wake.wait()
            await self._announce(trailing=False)
            # More webhooks within `trailing` seconds: announce them (at most once per interval); then, after
            # the quiet, one trailing event for whatever landed while a run was finishing.
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self._trailing)
                except TimeoutError:
                    await self._announce(trailing=True)
                    break
                await self._announce(trailing=False)

    async def _announce(self, *, trailing: bool) -> None:
        """Send one event, retrying with backoff until it goes; then keep quiet for the rest of ``interval``."""
        backoff = self._interval
        while True:
            self._wake.clear()
            started = time.monotonic()
            landed, self._landed = self._landed, 0
            if await self._emit(landed, trailing=trailing):
                await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))
                return
            self._landed += landed  # still owed: the next attempt announces them
            await asyncio.sleep(backoff)
            backoff = min(self._max_backoff, backoff * 2)

    async def _emit(self, landed: int, *, trailing: bool) -> bool:
        try:
            await asyncio.wait_for(self._send(landed, trailing), timeout=self._timeout)
        except Exception as exc:  # TimeoutError, connection refused, auth: all mean "try again later"
            self.failures += 1
            if not self._down:  # one warning per outage
                log.warning("[Webhook] Prefect API unreachable, run signal retrying with backoff: %r", exc)
                self._down = True
            await self._drop_client()
            return False
        if self._down:
            log.info("[Webhook] Prefect API reachable again: run signal sent")
            self._down = False
        self.sent += 1
        return True

    async def _send(self, landed: int, trailing: bool) -> None:
        events = self._prefect
        if self._client is None:
            client = events.get_events_client(reconnection_attempts=0)
            await client.__aenter__()
            self._client = client
        await self._client.emit(
            events.Event(
                event=EVENT,
                resource={"prefect.resource.id": RESOURCE_PREFIX + self.writer},
                payload={"landed": landed, "trailing": trailing},
            )
        )

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.__aexit__(None, None, None), timeout=self._timeout)


def _import_prefect_events() -> Any:
    """Prefect's events module (``Event``, ``get_events_client``), imported off the event loop."""
    return importlib.import_module("prefect.events")


def api_url_from_environment() -> str | None:
    return os.environ.get("PREFECT_API_URL") or None
