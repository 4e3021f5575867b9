"""A full control plane for fault tests: DNS, 2 discoverers, 2 replicas, Envoys on both replicas."""
from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from harness.envoy import EnvoyProc, tls_reach
from harness.host import free_port
from harness.plane import Plane
from harness.procs import ProcGroup
from harness.wait import wait_until
from tools.flyzone import FlyBuilder

DOMAIN = "builders.internal"


def sni(bid: str) -> str:
    return f"{bid}.{DOMAIN}"


class Cluster(Plane):
    """``redis`` needs ``.url`` and ``.client()`` (a synchronous client of the primary);
    ``xds_args`` are added to every xds-server's command line, ``envoy_args`` to every
    ``xdsctl bootstrap`` (e.g. ``--fcds`` on both for filter_chains over FCDS). The fixtures
    (``redis``, ``dns_server``, ``procs``) stop everything at teardown."""

    def __init__(self, tmp: Path, redis, dns_server, procs: ProcGroup, *, stable: int = 6, pool: int = 10,
                 discoverers: int = 2, replicas: int = 2, routing: str = "sni_cluster",
                 xds_args: list[str] | None = None, envoy_args: list[str] | None = None):
        super().__init__(tmp, procs=procs)
        self.tmp, self.redis, self.dns = tmp, redis, dns_server
        self.port = free_port("127.0.0.2")
        self.stable = [FlyBuilder(f"5{n:013x}", "builder", f"127.0.4.{n + 1}", "ord") for n in range(stable)]
        self.pool = [FlyBuilder(f"c{n:013x}", "builder", f"127.0.5.{n + 1}", "ord") for n in range(pool)]
        self.start_builders({sni(b.id): (b.ip, self.port) for b in self.stable + self.pool})
        self.ctx = self.client_context()
        self.in_dns = list(self.stable)
        self.dns.set_builders(self.in_dns)
        for n in range(1, discoverers + 1):
            self.start_discoverer("--source", "fly", "--app", "builder", "--dns-server", dns_server.addr,
                                  "--builder-port", str(self.port), "--poll-interval", "0.1", "--lease-ttl", "2",
                                  "--id", f"d{n}", label=f"discoverer{n}")
        for n in range(1, replicas + 1):
            self.start_replica(*(xds_args or []), "--routing", routing, "--replica-id", f"r{n}", label=f"xds{n}")
        self.ads_ports = [int(r.target.rsplit(":", 1)[1]) for r in self.replicas]
        self.routing = routing
        self.envoy_args = list(envoy_args or [])

    def envoy(self, node_id: str, ports: list[int] | None = None) -> EnvoyProc:
        ads = ",".join(f"127.0.0.1:{p}" for p in (ports or self.ads_ports))
        return self.start_envoy(node_id, ads=ads, region="ord", routing=self.routing, extra_bootstrap=self.envoy_args)

    def reach(self, envoy: EnvoyProc, bid: str, timeout: float = 2.0) -> bool:
        return tls_reach(envoy.listener_port, sni(bid), self.ctx, timeout=timeout) == sni(bid)

    def wait_routed(self, envoy: EnvoyProc, builders, timeout: float = 15) -> None:
        for b in builders:
            wait_until(lambda b=b: self.reach(envoy, b.id), timeout, what=f"{b.id} through {envoy.node_id}")

    def set_dns(self, builders) -> None:
        self.in_dns = list(builders)
        self.dns.set_builders(self.in_dns)

    def redis_routes(self) -> set[str]:
        with self.redis.client() as c:
            return {k.decode() for k in c.hkeys("{xds}:routes")}

    def redis_version(self) -> int:
        with self.redis.client() as c:
            return int(c.get("{xds}:version") or 0)


class Ticker(threading.Thread):
    """Calls ``tick()`` every ``every`` seconds until ``stop()`` (bounded by its join timeout)."""

    def __init__(self, every: float):
        super().__init__(daemon=True)
        self.every = every
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.tick()
            self._halt.wait(self.every)

    def tick(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


class Traffic(Ticker):
    """Connects to stable builders through an Envoy every ``every`` seconds; counts failures."""

    def __init__(self, cluster: Cluster, envoy: EnvoyProc, every: float = 0.05):
        super().__init__(every)
        self.cluster, self.envoy = cluster, envoy
        self.ok = self.failed = 0
        self.failures: list[str] = []

    def tick(self) -> None:
        b = random.choice(self.cluster.stable)
        if self.cluster.reach(self.envoy, b.id, timeout=2):
            self.ok += 1
        else:
            self.failed += 1
            self.failures.append(f"{time.strftime('%X')} {b.id}")


class Churn(Ticker):
    """Toggles pool builders in DNS every ``every`` seconds."""

    def __init__(self, cluster: Cluster, every: float = 0.2):
        super().__init__(every)
        self.cluster = cluster
        self.changes = 0

    def tick(self) -> None:
        b = self.cluster.pool[self.changes % len(self.cluster.pool)]
        current = list(self.cluster.in_dns)
        self.cluster.set_dns([x for x in current if x != b] if b in current else current + [b])
        self.changes += 1


class VersionWatch(Ticker):
    """Samples an Envoy's ACKed CDS version; records any step backwards."""

    def __init__(self, envoy: EnvoyProc, every: float = 0.05):
        super().__init__(every)
        self.envoy = envoy
        self.seen: list[int] = []
        self.backwards: list[tuple[int, int]] = []

    def current(self) -> int | None:
        try:
            for line in self.envoy.admin("/stats?filter=cluster_manager.cds.version_text").splitlines():
                if "version_text" in line:
                    text = line.split(":", 1)[1].strip().strip('"')
                    return int(text.split("-")[0]) if text else None
        except OSError:
            return None
        return None

    def tick(self) -> None:
        v = self.current()
        if v is not None:
            if self.seen and v < self.seen[-1]:
                self.backwards.append((self.seen[-1], v))
            self.seen.append(v)
