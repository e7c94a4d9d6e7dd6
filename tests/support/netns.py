"""Hosts that share nothing but a network, on one machine: Linux network namespaces joined by veth pairs to one
bridge (``ip netns``, ``ip link``; root only). Each host gets its own loopback, its own ports and one address on
``10.<a>.<b>.0/24``; the test process reaches every host through the bridge's address.

    with network(["store", "a", "b", "worker"]) as net:
        net.address("a")                      # "10.213.7.3"
        net.popen("a", [sys.executable, ...])  # a process on that host only

Everything is removed when the block ends (the namespaces, which takes their veth ends along, and the bridge),
including after a failure. Names carry the test process's pid, so two runs never share one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


def unavailable_reason() -> str | None:
    """Why these tests cannot run here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the suite as root)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Network:
    tag: str
    subnet: str  # "10.213.7"
    hosts: dict[str, str] = field(default_factory=dict)  # name -> namespace
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"mpbr{self.tag}"

    def address(self, host: str) -> str:
        return self.addresses[host]

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", self.hosts[host], *argv], **kwargs)

    def run(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.hosts[host], *argv], text=True, **kwargs)

    def _add_host(self, name: str, number: int) -> None:
        namespace, outside, inside = f"mp{self.tag}{name}", f"mp{self.tag}h{number}", f"mp{self.tag}e{number}"
        _ip("netns", "add", namespace)
        self.hosts[name] = namespace
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", namespace)
        _ip("link", "set", outside, "master", self.bridge, "up")
        address = f"{self.subnet}.{number}"
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", inside)
        _ip("-n", namespace, "link", "set", inside, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        self.addresses[name] = address


@contextmanager
def network(names: Sequence[str]) -> Iterator[Network]:
    tag = f"{os.getpid() % 100000}"
    net = Network(tag=tag, subnet=f"10.213.{os.getpid() % 250 + 1}")
    try:
        _ip("link", "add", net.bridge, "type", "bridge")
        _ip("addr", "add", f"{net.subnet}.1/24", "dev", net.bridge)
        _ip("link", "set", net.bridge, "up")
        for number, name in enumerate(names, start=2):
            net._add_host(name, number)
        yield net
    finally:
        for namespace in net.hosts.values():
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", net.bridge], capture_output=True, timeout=30)
