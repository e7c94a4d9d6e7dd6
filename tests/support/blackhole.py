"""A TCP proxy on 127.0.0.1 that can turn into a network partition: after a byte budget it forwards nothing more,
in either direction, and keeps every socket open, so the peers neither get an answer nor see a hang-up.

    with BlackholeProxy(("127.0.0.1", server_port)) as proxy:   # its own free port: proxy.port
        ...                                  # forwards everything
        proxy.stall_after(3000)              # 3 kB more from the clients, then silence
        ...                                  # proxy.stalled is set once the budget ran out
        proxy.heal()                         # drops the stalled connections; forwards again

One thread runs a selector loop; the test thread talks to it only through :meth:`stall_after` and :meth:`heal`,
which hand it a command and wait until it is done.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import threading
from collections.abc import Callable
from types import TracebackType

_CHUNK = 65536


class BlackholeProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self.forwarded = 0  # bytes sent from clients to the upstream
        self._budget: int | None = None  # None: no limit
        self.stalled = threading.Event()  # the budget ran out: nothing moves any more
        self.held: list[socket.socket] = []  # every socket of a stalled connection, kept open
        self._peer: dict[socket.socket, socket.socket] = {}
        self._from_client: set[socket.socket] = set()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._commands: queue.Queue[tuple[Callable[[], None], threading.Event]] = queue.Queue()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="blackhole-proxy", daemon=True)
        self._thread.start()

    # --- the test's side ------------------------------------------------------------------------------------
    def stall_after(self, nbytes: int) -> None:
        """Forward ``nbytes`` more from the clients, then nothing at all."""
        self._call(lambda: setattr(self, "_budget", self.forwarded + nbytes))

    def heal(self) -> None:
        """Close every stalled connection (both ends) and forward everything again."""
        self._call(self._heal)

    def close(self) -> None:
        self._call(self._close_all)
        self._thread.join(timeout=10)
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> BlackholeProxy:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _call(self, command: Callable[[], None]) -> None:
        done = threading.Event()
        self._commands.put((command, done))
        self._wake_w.send(b"x")
        if not done.wait(timeout=10):
            raise RuntimeError("the blackhole proxy did not answer")

    # --- the loop's side ------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closing:
            for key, _ in self._selector.select(timeout=1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                elif sock is self._wake_r:
                    self._run_commands()
                elif sock in self._peer:  # not dropped by an earlier event of this round
                    self._pump(sock)

    def _run_commands(self) -> None:
        self._wake_r.recv(_CHUNK)
        while not self._commands.empty():
            command, done = self._commands.get()
            command()
            done.set()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        if self.stalled.is_set():  # a partition lets the handshake through (the kernel did it) and nothing else
            self.held.append(client)
            return
        server = socket.create_connection(self.upstream, timeout=5)
        for sock in (client, server):
            sock.settimeout(None)
            self._selector.register(sock, selectors.EVENT_READ)
        self._peer[client], self._peer[server] = server, client
        self._from_client.add(client)

    def _pump(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(_CHUNK)
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        if sock in self._from_client and self._budget is not None:
            allowed = max(0, self._budget - self.forwarded)
            if len(data) > allowed:
                self._forward(sock, data[:allowed])
                self._stall()
                return
        self._forward(sock, data)

    def _forward(self, sock: socket.socket, data: bytes) -> None:
        if sock in self._from_client:
            self.forwarded += len(data)
        with contextlib.suppress(OSError):
            self._peer[sock].sendall(data)

    def _stall(self) -> None:
        """Stop reading every socket (their buffers fill, the peers' writes block) and keep them all open."""
        for sock in list(self._peer):
            self._selector.unregister(sock)
            self.held.append(sock)
        self._peer.clear()
        self._from_client.clear()
        self.stalled.set()

    def _drop(self, sock: socket.socket) -> None:
        peer = self._peer.pop(sock)
        self._peer.pop(peer, None)
        for each in (sock, peer):
            self._from_client.discard(each)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(each)
            each.close()

    def _heal(self) -> None:
        for sock in self.held:
            sock.close()
        self.held.clear()
        self._budget = None
        self.stalled.clear()

    def _close_all(self) -> None:
        self._heal()
        for sock in list(self._peer):
            sock.close()
        self._peer.clear()
        self._listener.close()
        self._closing = True
