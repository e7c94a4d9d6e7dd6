"""uvicorn's httptools protocol with the limits a public endpoint needs: deadlines and byte caps.

httptools reads a request head of any size and uvicorn waits forever for a head or body that never completes,
so slow or idle clients can hold every file descriptor and one client can stall the event loop with a huge
header. :class:`GuardedHttpToolsProtocol` adds, per connection:

- a **head deadline**: the request line and headers must arrive within ``header_timeout_seconds`` of the
  connection opening or the request's first byte (408, then closed). Idle keep-alive connections are closed by
  uvicorn's own ``timeout_keep_alive``;
- a **body deadline**: the body must be complete within ``body_timeout_seconds`` of the head (408, closed);
- a **head size cap**: more than ``max_header_bytes`` before the head is complete is refused with 431 and the
  connection closed, before the parser buffers the rest;
- a **process-wide cap on bytes in unfinished bodies** (``max_pending_body_bytes``): past it the request that
  would exceed it gets 503 and its connection is closed (the sender retries later);
- a **process-wide cap on open connections** (``max_connections``, below the open-file limit): a connection past
  it closes the idlest idle one — kept alive between requests, or connected and silent — since dropping that
  costs its client nothing but a reconnect; a connection in the middle of a request is never dropped for a new
  one (when every other one is, the new one is closed instead). Without the cap, idle clients that reconnect as
  soon as they are dropped hold every descriptor: accept() fails with EMFILE, and libuv then closes every
  connection waiting in the backlog, real webhooks included, for as long as the flood lasts.

Deadlines are checked by one timer per event loop that sweeps the open connections twice a second, and idle
connections are kept in the order they fell idle, so the hot path only stores a float and moves the connection
in or out of one dict. Every refusal is logged, at most one line per kind every 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
from dataclasses import dataclass
from typing import ClassVar, Final

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from memberpulse.landing.throttled_log import ThrottledLog
from memberpulse.settings import Settings, default_settings

log = logging.getLogger("landing")
_SWEEP_SECONDS = 0.5
#: Descriptors a landing process keeps for everything but its connections: the listening socket, the event loop,
#: the raw segment and quarantine files, the log, the run signal's client (about 20 in use).
FD_RESERVE: Final = 64
#: The listen backlog's ceiling (uvicorn's default). Connections that arrive together are all accepted before the
#: first is looked at, so the backlog's worth of descriptors is kept free too: the backlog is an eighth of the
#: open-file limit up to this.
MAX_LISTEN_BACKLOG: Final = 2048


def open_file_limit() -> int:
    """This process's open-file limit (the soft ``RLIMIT_NOFILE``)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def listen_backlog(fd_limit: int) -> int:
    """The listen backlog ``serve`` asks for: an eighth of the open-file limit, 16 to :data:`MAX_LISTEN_BACKLOG`."""
    return min(MAX_LISTEN_BACKLOG, max(16, fd_limit // 8))


def connection_room(fd_limit: int) -> int:
    """The most connections a process with ``fd_limit`` descriptors can hold while an accept burst still finds
    descriptors free: the limit minus the backlog and :data:`FD_RESERVE` (``MEMBERPULSE_MAX_CONNECTIONS``'s
    default, and its ceiling)."""
    return fd_limit - listen_backlog(fd_limit) - FD_RESERVE


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What a connection may take (``MEMBERPULSE_HEADER_TIMEOUT_SECONDS``, ``_BODY_TIMEOUT_SECONDS``,
    ``_MAX_HEADER_BYTES``, ``_MAX_PENDING_BODY_BYTES``, ``_MAX_CONNECTIONS``: defaults and bounds on the Settings
    fields; an unset ``MEMBERPULSE_MAX_CONNECTIONS`` is :func:`connection_room` of this process's file limit)."""

    header_timeout_seconds: float
    body_timeout_seconds: float
    max_header_bytes: int
    max_pending_body_bytes: int
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        configured = settings.max_connections
        return cls(
            header_timeout_seconds=settings.header_timeout_seconds,
            body_timeout_seconds=settings.body_timeout_seconds,
            max_header_bytes=settings.max_header_bytes,
            max_pending_body_bytes=settings.max_pending_body_bytes,
            max_connections=max(1, connection_room(open_file_limit())) if configured is None else configured,
        )


#: The limits with every setting at its default, until ``serve`` sets the configured ones in each worker.
DEFAULT_CONNECTION_LIMITS: Final = ConnectionLimits.from_settings(default_settings())


class _Connections:
    """The open connections of an event loop: its one deadline timer (running only while connections are open)
    and the idle ones, idlest first."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.watched: set[GuardedHttpToolsProtocol] = set()
        self.idle: dict[GuardedHttpToolsProtocol, None] = {}  # insertion order: the order they fell idle
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, protocol: GuardedHttpToolsProtocol) -> None:
        self.watched.add(protocol)
        if self._handle is None:
            self._handle = self.loop.call_later(_SWEEP_SECONDS, self._sweep)

    def forget(self, protocol: GuardedHttpToolsProtocol) -> None:
        self.watched.discard(protocol)
        self.idle.pop(protocol, None)

    def make_room(self, max_connections: int) -> bool:
        """Close the idlest idle connection while more than ``max_connections`` are open; False when every one
        left is in the middle of a request."""
        while len(self.watched) > max_connections:
            idlest = next(iter(self.idle), None)
            if idlest is None:
                return False
            self.forget(idlest)  # now: its descriptor is released only once the loop gets to it
            idlest.drop_idle(len(self.watched))
        return True

    def _sweep(self) -> None:
        now = self.loop.time()
        for protocol in [p for p in self.watched if p.deadline <= now]:
            protocol.expire()
        self._handle = self.loop.call_later(_SWEEP_SECONDS, self._sweep) if self.watched else None


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Pass as ``uvicorn.Config(http=GuardedHttpToolsProtocol)``; set :attr:`limits` before serving."""

    limits: ClassVar[ConnectionLimits] = DEFAULT_CONNECTION_LIMITS
    pending_body_bytes: ClassVar[int] = 0  # this process's bytes of bodies not yet complete
    refusals: ClassVar[ThrottledLog] = ThrottledLog(log)
    _connections: ClassVar[_Connections | None] = None

    deadline: float = math.inf
    _phase = "head"  # "head" (head bytes counted), "body" (body bytes counted) or "app"
    _head_bytes = 0
    _body_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        connections = GuardedHttpToolsProtocol._connections
        if connections is None or connections.loop is not self.loop:
            connections = GuardedHttpToolsProtocol._connections = _Connections(self.loop)
        connections.watch(self)
        self.deadline = self.loop.time() + self.limits.header_timeout_seconds
        if not connections.make_room(self.limits.max_connections):
            connections.forget(self)
            self._refuse_connection(len(connections.watched))
            return
        connections.idle[self] = None  # the newest idle connection: the last to go

    def connection_lost(self, exc: Exception | None) -> None:
        self._release_body()
        connections = GuardedHttpToolsProtocol._connections
        if connections is not None:
            connections.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Outside a body, bytes belong to a head. Feed at most what is left of the head allowance: if the head
        # completes within it the rest is body, else the head is too big, refused before httptools buffers it.
        while self._phase in ("head", "app"):
            room = self.limits.max_header_bytes - self._head_bytes
            if len(data) <= room:
                self._head_bytes += len(data)
                break
            if room <= 0:
                self._refuse(431, "request head over %d bytes", self.limits.max_header_bytes)
                return
            self._head_bytes += room
            allowed, data = data[:room], data[room:]
            super().data_received(allowed)
        if data and self._phase != "closed":
            super().data_received(data)

    def on_message_begin(self) -> None:
        connections = GuardedHttpToolsProtocol._connections
        if connections is not None:
            connections.idle.pop(self, None)  # a request started: never dropped for a new connection
        super().on_message_begin()
        if self._phase == "app":  # the next request on a kept-alive connection
            self._phase = "head"
        if self.deadline == math.inf:
            self.deadline = self.loop.time() + self.limits.header_timeout_seconds

    def on_headers_complete(self) -> None:
        self._phase = "body"
        self.deadline = self.loop.time() + self.limits.body_timeout_seconds
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        GuardedHttpToolsProtocol.pending_body_bytes += len(body)
        if GuardedHttpToolsProtocol.pending_body_bytes > self.limits.max_pending_body_bytes:
            self._refuse(503, "unfinished request bodies over %d bytes", self.limits.max_pending_body_bytes)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._release_body()
        self._phase, self._head_bytes, self.deadline = (
            "app",
            0,
            math.inf,
        )  # the answer is the app's business, not the client's
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        connections = GuardedHttpToolsProtocol._connections
        if self.timeout_keep_alive_task is not None and connections is not None:  # kept alive, waiting: idle
            connections.idle[self] = None

    def drop_idle(self, still_open: int) -> None:
        """Close this idle connection to make room for a new one (its client only has to reconnect)."""
        self.deadline, self._phase = math.inf, "closed"
        self.refusals.warning(
            "idle-dropped", "[Webhook] Closed the idlest idle connection (from %s) for a new one: %d connections "
            "open, the most one process keeps (MEMBERPULSE_MAX_CONNECTIONS)", self._client_name(), still_open,
        )  # fmt: skip
        self.transport.close()

    def _refuse_connection(self, still_open: int) -> None:
        self.deadline, self._phase = math.inf, "closed"
        self.refusals.warning(
            "connection-refused", "[Webhook] Closed a new connection from %s: %d connections open, each in the "
            "middle of a request (MEMBERPULSE_MAX_CONNECTIONS)", self._client_name(), still_open,
        )  # fmt: skip
        self.transport.close()

    def _client_name(self) -> str:
        return f"{self.client[0]}" if self.client else "unknown client"

    def expire(self) -> None:
        """Called by the sweeper once :attr:`deadline` has passed."""
        if self._phase == "head":
            self._refuse(408, "request head not complete within %g s", self.limits.header_timeout_seconds)
        else:
            self._refuse(408, "request body not complete within %g s", self.limits.body_timeout_seconds)

    def _release_body(self) -> None:
        GuardedHttpToolsProtocol.pending_body_bytes -= self._body_bytes
        self._body_bytes = 0

    def _refuse(self, status: int, reason: str, limit: float) -> None:
        """Answer ``status`` (unless the app already started an answer) and close the connection."""
        self.deadline = math.inf
        self._phase = "closed"
        transport = self.transport
        if transport.is_closing():
            return
        detail = reason % limit
        self.refusals.warning(
            f"limit-{status}", "[Webhook] Closed a connection from %s with %d: %s", self._client_name(), status, detail
        )
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            body = orjson.dumps({"error": detail})
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            ).encode()
            transport.write(head + body)
        transport.close()


_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}
