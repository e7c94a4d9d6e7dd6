"""moto's S3 server as the object store of the tests: a named stand-in for S3 (docs/development.md#stand-ins), a
real HTTP server, so obstore talks to it exactly as to S3 (signed requests, ETags, conditional writes, 412s).
:func:`s3_thread` serves from a thread of the test process on 127.0.0.1 (the session fixture ``s3``);
:func:`s3_server` from a process of its own on any address (a network namespace's, in the multi-host tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

# Binds port 0 and says which port it got: no race for a port chosen beforehand.
_SERVER = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address=sys.argv[1], port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def environment(self) -> dict[str, str]:
        """The standard AWS variables a memberpulse process needs to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "memberpulse-tests",
            "AWS_SECRET_ACCESS_KEY": "memberpulse-tests-secret",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def new_bucket(self) -> str:
        """A fresh, empty bucket (one per test: tests never see each other's objects)."""
        name = f"mp-{uuid.uuid4().hex[:16]}"
        httpx.put(f"{self.endpoint}/{name}", timeout=10).raise_for_status()
        return name


@contextmanager
def s3_thread() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(endpoint=f"http://{host}:{port}")
    finally:
        server.stop()


@contextmanager
def s3_server(host: str = "127.0.0.1", launcher: Sequence[str] = ()) -> Iterator[S3Server]:
    """``launcher``: what to run it under, e.g. ``["ip", "netns", "exec", name]`` for a network namespace's host."""
    process = subprocess.Popen(
        [*launcher, sys.executable, "-c", _SERVER, host],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield S3Server(endpoint=f"http://{host}:{port}")
    finally:
        if process.stdin is not None:
            process.stdin.close()
        process.terminate()
        process.wait(timeout=10)
