"""``create_app(settings)``: the landing FastAPI app.

Routes:
- ``POST /api/webhooks/whop`` — :class:`~memberpulse.landing.endpoint.WebhookEndpoint`, a plain ASGI route;
  it also answers 405 for methods other than GET/HEAD/POST;
- ``GET /api/webhooks/whop`` — the health answer of the TypeScript webhook guide this project started from,
  plus ``storage``; 503 ``degraded`` when webhooks cannot be stored (see :mod:`memberpulse.landing.readiness`);
- ``GET /metrics`` — Prometheus text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from memberpulse.landing.endpoint import WEBHOOK_PATH, WebhookEndpoint
from memberpulse.landing.metrics import METRICS_CONTENT_TYPE, LandingMetrics, ShippingFigures
from memberpulse.landing.quarantine import Quarantine
from memberpulse.landing.raw_store import RawStore, writer_name
from memberpulse.landing.readiness import StorageHealth
from memberpulse.landing.run_signal import RunSignal, api_url_from_environment
from memberpulse.landing.shipper import Shipper, sources_for
from memberpulse.landing.verify import secret_keys
from memberpulse.settings import Settings
from memberpulse.storage import open_store

#: How long a stopping landing keeps trying to ship what is left (the next start ships the rest).
SHIP_ON_SHUTDOWN_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Landing:
    """Everything one landing process owns; reachable from routes as a dependency."""

    settings: Settings
    store: RawStore
    quarantine: Quarantine
    metrics: LandingMetrics
    endpoint: WebhookEndpoint
    health: StorageHealth
    run_signal: RunSignal
    #: Uploads what the raw files gained to the object store; None without ``MEMBERPULSE_STORAGE_URL``.
    shipper: Shipper | None = None

    def start_shipping(self) -> None:
        """Start the shipper (on the event loop: the run signal it raises after each upload is the loop's)."""
        if self.shipper is not None:
            loop, notify = asyncio.get_running_loop(), self.run_signal.notify
            self.shipper.on_shipped = lambda chunks: loop.call_soon_threadsafe(notify, chunks)
            self.shipper.start()

    async def stop_shipping(self) -> None:
        """A last ship of what is left; the next start on this disk ships what this one could not."""
        if self.shipper is not None:
            await asyncio.to_thread(self.shipper.stop, SHIP_ON_SHUTDOWN_SECONDS)

    def shipping(self) -> ShippingFigures | None:
        if self.shipper is None:
            return None
        status = self.shipper.status
        return ShippingFigures(
            lag_seconds=status.lag_seconds(time.monotonic()),
            ok=status.last_error is None,
            chunks=status.chunks,
            bytes=status.bytes,
            requests=dict(self.shipper.store.requests),
        )


def build_landing(settings: Settings) -> Landing:
    """Wire the store, quarantine, metrics and endpoint; raises ``ConfigError`` without a webhook secret."""
    keys = secret_keys(settings.require_webhook_secrets())
    writer = writer_name()
    metrics = LandingMetrics()
    health = StorageHealth(settings.data_dir, min_free_bytes=settings.min_free_bytes)
    run_signal = RunSignal(writer=writer, enabled=settings.run_signal, api_url=api_url_from_environment())

    shipper = _shipper(settings, writer)

    def flushed(records: int, seconds: float) -> None:
        metrics.observe_flush(records, seconds)
        health.write_succeeded()
        if shipper is None:  # with a store, workers read what is shipped: the shipper signals after each upload
            run_signal.notify(records)  # after the batch's 200s are released; the event goes from a background task

    store = RawStore(
        settings.landing_dir,
        writer=writer,
        segment_max_bytes=settings.segment_max_bytes,
        segment_max_age_seconds=settings.segment_max_age_seconds,
        on_flush=flushed,
        on_failure=health.write_failed,
    )
    quarantine = Quarantine(settings.quarantine_dir, max_bytes=settings.quarantine_max_bytes, writer=writer)
    endpoint = WebhookEndpoint(
        keys=keys,
        store=store,
        quarantine=quarantine,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        tolerance_seconds=settings.webhook_tolerance_seconds,
    )
    return Landing(settings, store, quarantine, metrics, endpoint, health, run_signal, shipper)


def _shipper(settings: Settings, writer: str) -> Shipper | None:
    """The shipper of this process's raw files when the storage URL is set (opening the store checks its URL and
    credentials' shape now: a landing that cannot ship refuses to start rather than ship nothing silently)."""
    object_store = open_store(settings)
    if object_store is None:
        return None
    return Shipper(
        object_store,
        sources_for(settings.landing_dir, settings.quarantine_dir),
        writer=writer,
        interval_seconds=settings.ship_interval_seconds,
        retention_days=settings.raw_retention_days,
    )


def get_landing(request: Request) -> Landing:
    landing: Landing = request.app.state.landing
    return landing


LandingDep = Annotated[Landing, Depends(get_landing)]


class LandingApp(FastAPI):
    """FastAPI, with ``POST /api/webhooks/whop`` taken before FastAPI's middleware and routing.

    That stack costs about as much CPU per request as verifying and storing the webhook; the fast path hands
    the request straight to the same :class:`WebhookEndpoint` the router would reach. Everything else (health,
    metrics, 404s, lifespan) goes through FastAPI as usual.
    """

    webhook_endpoint: WebhookEndpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.webhook_endpoint
        if (
            endpoint is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == WEBHOOK_PATH
        ):
            await endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    """The landing app for ``settings``. Refuses (``ConfigError``) to build without a webhook secret."""
    landing = build_landing(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        landing.run_signal.start()
        landing.start_shipping()
        yield
        await landing.run_signal.aclose()
        # Shutdown: acknowledge nothing more, finish the batches in flight, close the segment.
        await landing.store.aclose()
        landing.quarantine.close()
        await landing.stop_shipping()

    app = LandingApp(
        title="memberpulse landing",
        summary="Verifies Whop webhooks and stores them raw and durably before answering.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.landing = landing

    @app.get(WEBHOOK_PATH)
    async def webhook_health(landing: LandingDep) -> JSONResponse:
        status, body = landing.health.answer()
        shipping = landing.shipping()
        if shipping is not None:  # reported, never a 503: a store outage hits every replica at once
            body["shipping"] = {"lag_seconds": round(shipping.lag_seconds, 3), "ok": shipping.ok}
        return JSONResponse(body, status_code=status)

    @app.get("/metrics", response_class=Response)
    async def metrics(landing: LandingDep) -> Response:
        health = landing.health
        text = landing.metrics.render(
            free_bytes=health.free_bytes(),
            storage_ok=health.problem() is None,
            refusals=landing.quarantine.refusals,
            shipping=landing.shipping(),
        )
        return Response(text, media_type=METRICS_CONTENT_TYPE)

    # After the GET route: POST (and any other method, which it answers 405) reaches the plain ASGI endpoint.
    app.router.routes.append(Route(WEBHOOK_PATH, endpoint=landing.endpoint))
    app.webhook_endpoint = landing.endpoint
    return app
