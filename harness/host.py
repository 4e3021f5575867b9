"""Where a part runs: the seam between the harness and the machine's network.

A ``Host`` knows the address a part binds and how to run a command there. Today every
region's host is loopback (``127.x`` addresses, commands run as they are). A host in a
network namespace (harness/netns.py) has an IPv6 6PN address and the prefix
``ip netns exec NS``; a plane gets one host per region and never spells an address itself.

Contract: ``argv(cmd)`` is the command line that runs ``cmd`` on the host; ``address`` is what
servers there bind and what clients elsewhere dial; ``free_port()`` a port free on that address
a moment ago; ``hostport(port)`` the ``HOST:PORT`` form our flags take (IPv6 in brackets).
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Sequence


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM, preferred: int = 0) -> int:
    """A port that was free a moment ago (the caller must bind soon, or retry); ``preferred`` when free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in dict.fromkeys((preferred, 0)):
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError(f"no free port on {host}")


def hostport(address: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 address in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True)
class Host:
    """One place to run parts: the address they bind and the argv prefix that runs a command there."""

    name: str = "loopback"
    address: str = "127.0.0.1"
    prefix: tuple[str, ...] = ()

    def argv(self, cmd: Sequence[str]) -> list[str]:
        return [*self.prefix, *(str(a) for a in cmd)]

    def free_port(self, preferred: int = 0) -> int:
        return free_port(self.address, preferred=preferred)

    def hostport(self, port: int) -> str:
        return hostport(self.address, port)


LOOPBACK = Host()
