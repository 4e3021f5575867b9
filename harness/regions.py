"""The regions lab: the one harness (``harness.plane.Plane``) given several regions, each a network
namespace, joined by the user-space WAN.

``Lab(directory, LabSpec(regions=("ord", "syd")))`` then ``start()``:

- a namespace per region (harness/netns.py: 6PN address ``fdaa:<run>:<n>::2``, ``fdaa::3``);
- the WAN relay (harness/wan.py, ``python -m harness.wan``): one path per pair of regions,
  RTTs close to Fly's (ord-ams 90 ms, ord-syd 180 ms, ams-syd 250 ms); every TCP connection
  from one region to another (Redis, builders) crosses it; ``lab.wan.cut(a, b)`` / ``heal``;
- the Redis primary in the first region, a replica in every other (replicating through the
  WAN, ``repl-timeout 3``, ``repl-ping-replica-period 1``);
- in each region its own DNS stand-in on ``[fdaa::3]:53`` answering for the whole org (every
  zone holds every builder), a discoverer (``--source fly``, any may lead), an xds-server
  (reading its region's Redis: the primary's region the primary, others their replica with
  ``--redis-read-url``; status to the primary), TLS builders and Envoys.

``close()`` stops every process, the relay, and removes the namespaces, whatever happened.
"""
from __future__ import annotations

import json

import redis
from dataclasses import dataclass
from pathlib import Path

from .netns import FLY_DNS, Namespaces, NsHost
from .plane import Plane, Replica, sni
from .procs import Proc, scrape
from .redis_ha import REDIS7
from .wait import wait_until
from .wan import WanControl, default_rtt_ms
from .dns import DnsProcess

REDIS_PORT = 6379
BUILDER_PORT = 8443
DNS_PORT = 53
SENTINEL_PORT = 26379
MASTER = "flyxds"
METRICS_PORT = 9100
REPLICA_TIMING = ("--repl-timeout", "3", "--repl-ping-replica-period", "1")
APP = "builder"


@dataclass(frozen=True)
class LabSpec:
    regions: tuple[str, ...] = ("ord", "syd")  # the first holds the Redis primary
    builders: int = 2  # per region
    envoys: int = 1  # per region
    poll_interval: float = 0.5  # the discoverers' DNS poll
    # A lease call is bounded by min(1 s, ttl/4); a new connection to a primary 180 ms away costs
    # 4 round trips (TCP, HELLO, CLIENT SETNAME, the call): with a 2 s TTL a far discoverer never connects.
    lease_ttl: float = 4.0
    sentinels: bool = False  # one per region (quorum 2); every service then uses redis+sentinel://
    down_after_ms: int = 1000
    failover_timeout_ms: int = 3000
    leader: str | None = None  # this region's discoverer starts first and leads; None: any may
    discoverers: tuple[str, ...] | None = None  # the regions that run a discoverer (None: all)
    replica_priority: tuple[tuple[str, int], ...] = ()  # (region, Redis replica-priority): lower is promoted first
    replica_args: tuple[str, ...] = ()
    discoverer_args: tuple[str, ...] = ()


class Lab:
    def __init__(self, directory: Path, spec: LabSpec = LabSpec()):
        self.dir, self.spec = Path(directory), spec
        self.primary_region = spec.regions[0]
        self.namespaces = Namespaces(list(spec.regions))
        self.hosts: dict[str, NsHost] = self.namespaces.hosts()
        self.plane = Plane(self.dir, self.hosts, redis_url=self.sentinel_url() if spec.sentinels else None)
        self.sentinels: dict[str, Proc] = {}
        self.wan: WanControl | None = None
        self.relay: Proc | None = None
        self.dns: dict[str, DnsProcess] = {}
        self.replicas: dict[str, Replica] = {}
        self.builders: dict[str, list[tuple[str, str]]] = {}  # region -> [(id, address)]
        self.discoverers: dict[str, Proc] = {}

    # --- addresses --------------------------------------------------------
    def address(self, region: str) -> str:
        return self.hosts[region].address

    def redis_url(self, region: str) -> str:
        """The Redis a process in ``region`` reads: the primary in its region, else its replica."""
        return f"redis://{self.hosts[region].hostport(REDIS_PORT)}/0"

    @property
    def primary_url(self) -> str:
        return self.redis_url(self.primary_region)

    def envoy(self, region: str, n: int = 1):
        return next(e for e in self.plane.envoys if e.node_id == f"{region}-envoy{n}")

    def sentinel_url(self, near: str | None = None) -> str:
        """Every region's sentinel (``near``'s first): the URL the services take with ``sentinels``."""
        regions = sorted(self.spec.regions, key=lambda r: r != near)
        hosts = ",".join(self.hosts[r].hostport(SENTINEL_PORT) for r in regions)
        return f"redis+sentinel://{hosts}/{MASTER}"

    def metrics(self, region: str) -> dict[str, float]:
        return scrape(METRICS_PORT, self.address(region))

    def rtt(self, a: str, b: str) -> float:
        return default_rtt_ms(a, b) / 1000

    # --- start ------------------------------------------------------------
    def start(self) -> "Lab":
        try:
            self._plan_builders()
            self._start_wan()
            self._start_redis()
            if self.spec.sentinels:
                self._start_sentinels()
            for region in self._leader_first():
                self._start_region(region)
                if region == self.spec.leader:
                    self.discoverers[region].wait_for_log("leadership won", 20)
            for region in self.spec.regions:
                for n in range(self.spec.envoys):
                    self.plane.start_envoy(f"{region}-envoy{n + 1}", region=region,  # admin reachable from here
                                           extra_bootstrap=("--admin-address", self.address(region)))
        except BaseException:
            self.close()
            raise
        return self

    def _leader_first(self) -> list[str]:
        lead = [self.spec.leader] if self.spec.leader else []
        return lead + [r for r in self.spec.regions if r not in lead]

    def _plan_builders(self) -> None:
        for i, region in enumerate(self.spec.regions, start=1):
            ns = self.namespaces[region]
            self.builders[region] = []
            for k in range(self.spec.builders):
                address = f"{ns.address.rsplit('::', 1)[0]}::{0x100 + k:x}"
                ns.add_address(address)
                self.builders[region].append((f"{i:02x}{k:012x}", address))

    def _start_wan(self) -> None:
        paths = []
        for a in self.spec.regions:
            for b in self.spec.regions:
                if a == b:
                    continue
                endpoints = [[self.address(b), REDIS_PORT]] + [[addr, BUILDER_PORT] for _, addr in self.builders[b]]
                if self.spec.sentinels:
                    endpoints.append([self.address(b), SENTINEL_PORT])
                for address in dict.fromkeys(address for address, _ in endpoints):
                    self.namespaces[a].add_address(address)  # a dials b's address: the relay answers in a
                paths.append({"a": a, "b": b, "one_way_ms": default_rtt_ms(a, b) / 2, "endpoints": endpoints,
                              "listen_ns": self.namespaces[a].name, "connect_ns": self.namespaces[b].name})
        spec_file, control = self.dir / "wan.json", self.dir / "wan.sock"
        spec_file.write_text(json.dumps({"paths": paths}))
        self.relay = self.plane.procs.start_python(["-m", "harness.wan", str(spec_file), str(control)], label="wan")
        self.relay.wait_for_log("wan relay ready", 10)
        self.wan = WanControl(str(control))

    def _start_redis(self) -> None:
        primary = self.plane.start_redis(region=self.primary_region, port=REDIS_PORT, args=self._announce(
            self.primary_region))
        for region in self.spec.regions[1:]:
            replica = self.plane.start_redis(region=region, port=REDIS_PORT, name=f"redis-{region}",
                                             args=["--replicaof", primary.host.address, str(REDIS_PORT),
                                                   *REPLICA_TIMING, *self._announce(region)])
            wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up", 20,
                       what=f"the {region} replica linked to the primary")

    def _announce(self, region: str) -> list[str]:
        """Through the relay a replica's connection comes from the master's own region: say where it is."""
        priority = dict(self.spec.replica_priority).get(region)
        return (["--replica-announce-ip", self.address(region), "--replica-announce-port", str(REDIS_PORT)]
                + (["--replica-priority", str(priority)] if priority is not None else []))

    def _start_sentinels(self) -> None:
        for region in self.spec.regions:
            directory = self.dir / f"sentinel-{region}"
            directory.mkdir(parents=True, exist_ok=True)
            address = self.address(region)
            (directory / "sentinel.conf").write_text("\n".join([
                f"port {SENTINEL_PORT}", f"bind {address}", "protected-mode no", f"dir {directory}",
                f"sentinel announce-ip {address}", f"sentinel announce-port {SENTINEL_PORT}",
                f"sentinel monitor {MASTER} {self.address(self.primary_region)} {REDIS_PORT} 2",
                f"sentinel down-after-milliseconds {MASTER} {self.spec.down_after_ms}",
                f"sentinel failover-timeout {MASTER} {self.spec.failover_timeout_ms}",
                f"sentinel parallel-syncs {MASTER} 1"]) + "\n")
            self.sentinels[region] = self.plane.procs.add(Proc(
                f"sentinel-{region}", [str(REDIS7), str(directory / "sentinel.conf"), "--sentinel"],
                directory / "sentinel.log", host=self.hosts[region]))
        others = len(self.spec.regions) - 1
        for region in self.spec.regions:
            wait_until(lambda: self._sentinel_knows(region, others), 30, interval=0.1,
                       what=f"the {region} sentinel knowing the other sentinels and the replicas")

    def _sentinel_knows(self, region: str, others: int) -> bool:
        with redis.Redis(host=self.address(region), port=SENTINEL_PORT, socket_timeout=2) as c:
            return (len(c.sentinel_sentinels(MASTER)) == others and len(c.sentinel_slaves(MASTER)) == others)

    def master_address(self, region: str) -> str:
        """The master as ``region``'s sentinel names it."""
        with redis.Redis(host=self.address(region), port=SENTINEL_PORT, socket_timeout=2) as c:
            return c.sentinel_get_master_addr_by_name(MASTER)[0].decode()

    def _start_region(self, region: str) -> None:
        host = self.hosts[region]
        dns = self.dns[region] = DnsProcess(self.dir / f"dns-{region}", port=DNS_PORT,
                                            host=NsHost(name=region, address=FLY_DNS, prefix=host.prefix,
                                                        netns=host.netns))
        dns.set_builders(self.zone())
        dns.start()
        self.plane.start_builders({sni(bid): (addr, BUILDER_PORT) for bid, addr in self.builders[region]},
                                  label=f"builders-{region}", region=region)
        if self.spec.discoverers is None or region in self.spec.discoverers:
            self._start_discoverer(region, dns)
        read = [] if region == self.primary_region else ["--redis-read-url", self.redis_url(region)]
        self.replicas[region] = self.plane.start_replica(
            "--replica-id", f"{region}-xds1", "--metrics-listen", host.hostport(METRICS_PORT), *read,
            *self._replica_url(region), *self.spec.replica_args, label=f"{region}-xds1", region=region, wait=True)

    def _start_discoverer(self, region: str, dns: DnsProcess) -> None:
        fly = ["--source", "fly", "--dns-server", dns.addr, "--app", APP, "--builder-port", str(BUILDER_PORT)]
        if self.spec.sentinels:  # the Plane's URL names every sentinel; this one asks its own first
            fly += ["--redis-url", self.sentinel_url(region)]
        self.discoverers[region] = self.plane.start_discoverer(
            *fly, "--id", f"{region}-d1", "--poll-interval", str(self.spec.poll_interval), "--lease-ttl",
            str(self.spec.lease_ttl), *self.spec.discoverer_args, label=f"{region}-discoverer", region=region)

    def _replica_url(self, region: str) -> list[str]:
        return ["--redis-url", self.sentinel_url(region)] if self.spec.sentinels else []

    # --- DNS --------------------------------------------------------------
    def zone(self, extra: dict[str, list[tuple[str, str]]] | None = None) -> list[tuple]:
        """Every builder of every region, as the DNS stand-in takes them: (id, app, address, region)."""
        out = []
        for region, builders in {**self.builders, **(extra or {})}.items():
            out += [(bid, APP, addr, region) for bid, addr in builders]
        return out

    def set_dns(self, builders: dict[str, list[tuple[str, str]]]) -> None:
        """The org's builders, in every region's DNS at once."""
        self.builders = {r: list(b) for r, b in builders.items()}
        for dns in self.dns.values():
            dns.set_builders(self.zone())

    # --- stop -------------------------------------------------------------
    def close(self) -> None:
        try:
            for dns in self.dns.values():
                dns.stop()
            self.plane.close()
        finally:
            self.namespaces.close()

    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
