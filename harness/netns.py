"""Regions as network namespaces with Fly-style 6PN addresses, for the regions lab (harness/regions.py).

Each region is a namespace ``fx<run>-<region>`` (``run``: unique per process, so parallel labs
never collide) with:

- ``lo`` up, its 6PN address ``fdaa:<run>:<n>::2/128 dev lo nodad`` (what its parts bind) and
  ``fdaa::3`` (Fly's resolver address: the region's DNS stand-in listens there on port 53),
  and ``/etc/netns/NS/resolv.conf`` naming it, which ``ip netns exec`` mounts over
  /etc/resolv.conf;
- a veth to the test's namespace, routed both ways, so the test (its probes, metrics scrapes,
  readiness checks) reaches every region directly, with no delay: it stands in every region.
  The namespace's own routes go only back to the test's namespace, which does not forward
  (IPv6 forwarding off), so regions never reach each other that way;
- the addresses of other regions' servers, added to its ``lo`` by the WAN (harness/wan.py):
  the relay listens on them there, so a process in syd dials the ord address as on Fly and
  its bytes cross the delayed path.

Everything is removed by ``Namespaces.close()`` (also at interpreter exit, and idempotent):
the namespaces (their veths go with them) and the /etc/netns folders. Root only.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import itertools
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .host import Host

CLONE_NEWNET = 0x40000000
FLY_DNS = "fdaa::3"
NETNS_ETC = Path("/etc/netns")


_labs = itertools.count()


def run_tag() -> int:
    """A 16-bit number for one lab: names and address groups differ between the labs of one process
    and (but for a rare clash, which ``ip`` refuses loudly) between processes."""
    return (os.getpid() * 31 + next(_labs) * 0x2A1) % 0xFFF0 + 1


def ip(*args: str, ns: str | None = None) -> None:
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {out.stderr.strip()}")


@contextlib.contextmanager
def in_netns(name: str | None):
    """Sockets made inside this block belong to namespace ``name`` (None: the current one)."""
    if not name:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
        try:
            yield
        finally:
            libc.setns(home, CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(home)


@dataclass(frozen=True)
class NsHost(Host):
    """A ``Host`` in a namespace: free ports are found there, not in the test's namespace."""

    netns: str = ""

    def free_port(self, preferred: int = 0) -> int:
        with in_netns(self.netns):
            return super().free_port(preferred)


class Namespace:
    def __init__(self, region: str, index: int, run: int):
        self.region, self.index = region, index
        self.name = f"fx{run:x}-{region}"
        self.address = f"fdaa:{run:x}:{index}::2"
        self.veth = f"fx{run:x}v{index}"  # at most 15 characters
        self._peer_net = f"fdaa:ffff:{run:x}:{index}"

    def host(self) -> NsHost:
        return NsHost(name=self.region, address=self.address, prefix=("ip", "netns", "exec", self.name),
                      netns=self.name)

    def create(self) -> None:
        ip("netns", "add", self.name)
        ip("link", "set", "lo", "up", ns=self.name)
        for address in (self.address, FLY_DNS):
            self.add_address(address)
        ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.name)
        ip("-6", "addr", "add", f"{self._peer_net}::1/64", "dev", self.veth, "nodad")
        ip("-6", "addr", "add", f"{self._peer_net}::2/64", "dev", "eth0", "nodad", ns=self.name)
        ip("link", "set", self.veth, "up")
        ip("link", "set", "eth0", "up", ns=self.name)
        ip("-6", "route", "add", f"{self.address}/128", "via", f"{self._peer_net}::2")
        ip("-6", "route", "add", "default", "via", f"{self._peer_net}::1", ns=self.name)
        folder = NETNS_ETC / self.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "resolv.conf").write_text(f"nameserver {FLY_DNS}\n")

    def add_address(self, address: str) -> None:
        ip("-6", "addr", "add", f"{address}/128", "dev", "lo", "nodad", ns=self.name)

    def delete(self) -> None:
        for args in (("link", "del", self.veth), ("netns", "del", self.name)):
            with contextlib.suppress(OSError):
                ip(*args)
        shutil.rmtree(NETNS_ETC / self.name, ignore_errors=True)


def wait_reachable(address: str, port: int, timeout: float = 5.0) -> None:
    """A TCP connect from here: for readiness checks of a server in a namespace."""
    with socket.create_connection((address, port), timeout=timeout):
        pass


class Namespaces:
    """One namespace per region, removed on ``close()`` or at exit, whatever happened."""

    def __init__(self, regions: list[str], run: int | None = None):
        self.run = run or run_tag()
        self.by_region: dict[str, Namespace] = {}
        atexit.register(self.close)
        try:
            for index, region in enumerate(regions, start=1):
                ns = self.by_region[region] = Namespace(region, index, self.run)
                ns.delete()  # a leftover of a crashed run with our pid
                ns.create()
        except BaseException:
            self.close()
            raise

    def __getitem__(self, region: str) -> Namespace:
        return self.by_region[region]

    def hosts(self) -> dict[str, NsHost]:
        return {region: ns.host() for region, ns in self.by_region.items()}

    def close(self) -> None:
        for ns in self.by_region.values():
            ns.delete()
        self.by_region = {}

    def __enter__(self) -> "Namespaces":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
