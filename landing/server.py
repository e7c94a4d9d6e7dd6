"""``memberpulse serve``: the landing app under uvicorn (uvloop + httptools, no access log).

``serve`` binds and listens on its one socket itself, before it logs that it listens: a port that is taken is
a ``ConfigError`` naming the address (CLI exit 2, one line), not uvicorn's error after a success line. With
``MEMBERPULSE_LANDING_WORKERS`` > 1, uvicorn's process manager runs that many processes on that socket; each
builds its own app, so each has its own writer name, segments and metrics.

Before that it raises its open-file limit to the hard limit (systemd's default soft limit, 1,024, is far below
what the hard one allows), and sizes the listen backlog and the connection cap from it
(:func:`~memberpulse.landing.protocol.connection_room`); the worker processes inherit the limit.
"""

from __future__ import annotations

import errno
import functools
import logging
import resource
import socket
import sys
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from memberpulse.errors import ConfigError
from memberpulse.landing.app import create_app
from memberpulse.landing.protocol import (
    ConnectionLimits,
    GuardedHttpToolsProtocol,
    connection_room,
    listen_backlog,
    open_file_limit,
)
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
    fd_limit = raise_open_file_limit()
    limits = ConnectionLimits.from_settings(settings)  # as each worker will build them, under the raised limit
    check_connection_room(limits, fd_limit)
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
        backlog=listen_backlog(fd_limit),
    )
    listener = bind_listener(host, port, backlog=config.backlog)
    bound_port = listener.getsockname()[1]  # the OS's choice when port is 0
    log.info(
        "[Webhook] Listening on http://%s:%d/api/webhooks/whop (%d worker(s)), data dir %s",
        host, bound_port, workers, settings.data_dir.resolve(),
    )  # fmt: skip
    log.info(
        "[Webhook] Up to %d connections per process (open-file limit %d); past that a new one closes the idlest "
        "idle one", limits.max_connections, fd_limit,
    )  # fmt: skip
    try:
        if workers == 1:
            uvicorn.Server(config).run(sockets=[listener])
        else:
            Multiprocess(config, sockets=[listener]).run()
    finally:
        listener.close()


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one, as far as the system lets (logged); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # e.g. a hard limit above what the kernel allows one process
        log.warning("[Webhook] Could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft
    log.info("[Webhook] open-file limit raised from %d to %d (the hard limit)", soft, hard)
    return open_file_limit()


def check_connection_room(limits: ConnectionLimits, fd_limit: int) -> None:
    """``ConfigError`` (exit 2) when the connection cap would not stay below the open-file limit."""
    room = connection_room(fd_limit)
    if limits.max_connections <= room:
        return
    raise ConfigError(
        f"MEMBERPULSE_MAX_CONNECTIONS={limits.max_connections} does not fit the open-file limit of {fd_limit} "
        f"(at most {room}: the limit less the listen backlog and descriptors for files)"
        if room >= 1
        else f"the open-file limit of {fd_limit} leaves no descriptors for connections",
        variable="MEMBERPULSE_MAX_CONNECTIONS",
        hint="raise the limit (LimitNOFILE= in the unit, ulimit -n) or lower MEMBERPULSE_MAX_CONNECTIONS",
    )


def bind_listener(host: str, port: int, *, backlog: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, for every worker; ``ConfigError`` when that fails.

    SO_REUSEADDR as uvicorn sets it (a restart is not refused over the last run's TIME_WAIT connections), and
    never SO_REUSEPORT: Linux would then let a second ``memberpulse serve``, or any program that set it too,
    share the port and split the webhooks between them. So a port something already listens on is an error.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(backlog)
    except OSError as exc:
        listener.close()
        raise _bind_error(host, port, exc) from exc
    listener.set_inheritable(True)  # uvicorn's worker processes serve from it
    return listener


def _bind_error(host: str, port: int, exc: OSError) -> ConfigError:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(f"{address} is already in use", hint="stop the other process or pass --port")
    if exc.errno == errno.EACCES:
        return ConfigError(
            f"no permission to listen on {address}", hint="ports below 1024 need privileges: pass a higher --port"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"{host} is not an address of this machine", hint="pass --host with one of its addresses")
    return ConfigError(f"cannot listen on {address}: {exc.strerror or exc}", hint="check --host and --port")
