"""``memberpulse serve``: the landing app under uvicorn (uvloop + httptools, no access log).

With ``MEMBERPULSE_LANDING_WORKERS`` > 1, uvicorn's process manager runs that many processes on one listening
socket; each builds its own app, so each has its own writer name, segments and metrics.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from memberpulse.landing.app import create_app
from memberpulse.landing.protocol import ConnectionLimits, GuardedHttpToolsProtocol
from memberpulse.landing.readiness import probe_writable
from memberpulse.settings import Settings

log = logging.getLogger("landing")


def configure_logging(level: str) -> None:
    """Plain ``[Webhook] …`` lines on stderr, the style of the TypeScript webhook guide this project started from;
    uvicorn's own lines stay as they are."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)  # one of Settings' LogLevel values
    log.propagate = False


def _app_factory(settings: Settings) -> FastAPI:
    configure_logging(settings.log_level)
    GuardedHttpToolsProtocol.limits = ConnectionLimits.from_settings(settings)  # in each worker process
    return create_app(settings)


def serve(settings: Settings, *, host: str, port: int) -> None:
    """Run the landing endpoint until SIGINT/SIGTERM. ``ConfigError`` (CLI exit 2) without a webhook secret."""
    run_server(_app_factory, settings, host=host, port=port)


def run_server(app_factory: Callable[[Settings], FastAPI], settings: Settings, *, host: str, port: int) -> None:
    """Serve ``app_factory(settings)`` in ``settings.landing_workers`` processes (the factory must pickle)."""
    settings.require_webhook_secrets()  # refuse before binding anything
    probe_writable(settings.landing_dir)  # exit 2 now rather than answer every webhook 503
    configure_logging(settings.log_level)
    workers = settings.landing_workers
    config = uvicorn.Config(
        functools.partial(app_factory, settings),
        factory=True,
        host=host,
        port=port,
        loop="uvloop",
        http=GuardedHttpToolsProtocol,  # httptools with deadlines and byte caps
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        lifespan="on",
        access_log=False,
        # X-Forwarded-For is believed only from the reverse proxy, so logs and quarantine name the real sender.
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
        server_header=False,
        date_header=False,
        log_level=settings.log_level.lower(),
        workers=workers,
        timeout_graceful_shutdown=10,
    )
    log.info("[Webhook] Listening on http://%s:%d/api/webhooks/whop (%d worker(s))", host, port, workers)
    if workers == 1:
        uvicorn.Server(config).run()
        return
    socket = config.bind_socket()
    Multiprocess(config, sockets=[socket]).run()
