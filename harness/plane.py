"""A whole system started from its public command lines: the one harness of tests, benchmarks, soak and demo.

A ``Plane`` owns a directory (logs, certs, the DNS zone), one ``Host`` per region and every
part it starts. Each ``start_*`` returns once the part is ready, waiting on the event itself
(Redis answers PING, the DNS stand-in and the TLS builders write their port files, a replica's
gRPC health says SERVING, an Envoy's admin says LIVE), never on time passing:

- ``start_redis()``: redis-server (one per plane, on the first region's host);
- ``start_dns()``: tools/dns_server.py with a Fly-like zone (``plane.dns.set_builders``);
- ``start_builders({sni: (ip, port)})``: TLS stand-ins (tools/tls_backend.py), certificates in ``certs``;
- ``start_discoverer(*flags)``, ``start_replica(*flags)``: ``discoverer`` / ``xds-server`` with
  ``--redis-url`` (and a replica's ``--listen``) filled in;
- ``start_envoy(node_id, ads=...)``: ``xdsctl bootstrap`` then Envoy.

``close()`` stops every process newest first (Envoys before the replicas they use, replicas
before discoverers), then Redis; it is safe to call twice. A multi-region lab is the same
object with more than one region: ``Plane(dir, hosts={"ord": h1, "ams": h2})`` (each region's
parts bind its host's address and run under its prefix), or ``Plane.from_spec`` with a ``Spec``.
"""
from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from shared.model import DEFAULT_SNI_TEMPLATE
from tools.tls_backend import client_context

from .dns import DnsProcess
from .envoy import EnvoyProc, start_backends
from .host import LOOPBACK, Host
from .procs import Proc, ProcGroup
from .redis import RedisServer, start_redis
from .wait import wait_until


def sni(builder_id: str) -> str:
    """A builder's SNI under the default template."""
    return DEFAULT_SNI_TEMPLATE.format(id=builder_id)


def wait_serving(target: str, timeout: float = 30) -> float:
    """Seconds until the gRPC health service at ``target`` answers SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    def serving():
        with grpc.insecure_channel(target) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            return resp.status == health_pb2.HealthCheckResponse.SERVING

    t0 = time.monotonic()
    wait_until(serving, timeout, interval=0.01, what=f"xds-server at {target} serving")
    return time.monotonic() - t0


@dataclass
class Replica:
    """An xds-server: its process (every ``Proc`` attribute: ``kill``, ``alive``, ``log_has``...),
    the ``HOST:PORT`` it serves ADS on, and its region."""

    proc: Proc
    target: str
    region: str

    def __getattr__(self, name: str):
        return getattr(self.proc, name)


@dataclass(frozen=True)
class Region:
    """How many of each part a region runs in a ``Spec``, and extra flags for each kind."""

    discoverers: int = 1
    replicas: int = 1
    envoys: int = 0
    discoverer_args: tuple[str, ...] = ()
    replica_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Spec:
    """A standard plane: one Redis, the DNS stand-in, then each region's discoverers (fly source,
    ``--app app``), replicas and Envoys (each Envoy on its region's replicas)."""

    regions: Mapping[str, Region] = field(default_factory=lambda: {"ord": Region()})
    app: str = "builder"
    builder_port: int = 443


class Plane:
    """Parts of one system, stopped in reverse order of their start. ``procs``: a group to start
    them in (a test's fixture) instead of the plane's own; ``redis_url``: a Redis started elsewhere
    (a fixture's) instead of ``start_redis()``; ``Proc`` keyword arguments (``new_session``) apply
    to every process."""

    def __init__(self, directory: Path, hosts: Mapping[str, Host] | None = None, *, procs: ProcGroup | None = None,
                 redis_url: str | None = None, **proc_kw):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hosts = dict(hosts or {"ord": LOOPBACK})
        self.proc_kw = proc_kw
        self.procs = procs if procs is not None else ProcGroup(self.dir / "logs", **proc_kw)
        self._redis_url = redis_url
        self.certs = self.dir / "certs"
        self.redis: RedisServer | None = None
        self.redis_servers: list[RedisServer] = []  # every one started, the plane's first
        self.dns: DnsProcess | None = None
        self.discoverers: list[Proc] = []
        self.replicas: list[Replica] = []
        self.envoys: list[EnvoyProc] = []

    def host(self, region: str | None = None) -> Host:
        """The host of ``region``; the first region's when None or when the plane has no host for it
        (a region that is only a label, as in single-host tests of region scope)."""
        return self.hosts.get(region) or next(iter(self.hosts.values()))

    def region(self, region: str | None) -> str:
        return region or next(iter(self.hosts))

    @property
    def redis_url(self) -> str:
        if self._redis_url is None:
            assert self.redis is not None, "start_redis() first"
            return self.redis.url
        return self._redis_url

    def client_context(self) -> ssl.SSLContext:
        """A TLS client that trusts the stand-in builders' CA."""
        return client_context(self.certs)

    # --- parts ----------------------------------------------------------
    def start_redis(self, *, region: str | None = None, port: int | None = None, args: Sequence[str] = (),
                    name: str = "redis") -> RedisServer:
        """A redis-server on ``region``'s host; the first one started is the plane's (``redis_url``).
        ``args``: more flags (e.g. ``--replicaof HOST PORT`` for a region's replica)."""
        server = start_redis(self.dir / name, port=port, host=self.host(region), args=args, **self.proc_kw)
        self.redis_servers.append(server)
        self.redis = self.redis or server
        return server

    def start_dns(self, *, region: str | None = None, port: int = 0, args: Sequence[str] = ()) -> DnsProcess:
        self.dns = DnsProcess(self.dir / "dns", host=self.host(region), port=port, args=args, **self.proc_kw)
        self.dns.start()
        return self.dns

    def start_builders(self, backends: Mapping[str, tuple[str, int]], *, label: str = "builders",
                       region: str | None = None) -> Proc:
        """TLS stand-ins, name -> (address, port); ready once each listens."""
        return start_backends(self.procs, self.certs, dict(backends), label=label, host=self.host(region))

    def start_discoverer(self, *flags: str, label: str | None = None, region: str | None = None,
                         redis_url: str | None = None) -> Proc:
        """``discoverer --redis-url URL`` (the plane's Redis unless ``redis_url``) with ``flags``."""
        label = label or f"discoverer{len(self.discoverers) + 1}"
        proc = self.procs.start("discoverer", ["--redis-url", redis_url or self.redis_url, *flags], label=label,
                                host=self.host(region))
        self.discoverers.append(proc)
        return proc

    def start_replica(self, *flags: str, label: str | None = None, region: str | None = None, port: int = 0,
                      wait: bool = False, timeout: float = 60, redis_url: str | None = None) -> Replica:
        """``xds-server --listen HOST:PORT`` on the plane's Redis (or ``redis_url``: e.g. a region's
        replica); ``wait``: until its gRPC health says SERVING (bounded by ``timeout``)."""
        host = self.host(region)
        target = host.hostport(port or host.free_port())
        label = label or f"xds{len(self.replicas) + 1}"
        proc = self.procs.start("xds-server", ["--redis-url", redis_url or self.redis_url, "--listen", target, *flags],
                                label=label, host=host)
        replica = Replica(proc, target, self.region(region))
        self.replicas.append(replica)
        if wait:
            wait_serving(target, timeout)
        return replica

    def start_envoy(self, node_id: str, *, ads: str | None = None, region: str | None = None,
                    directory: Path | None = None, wait: bool = True, log_level: str = "info", **kw) -> EnvoyProc:
        """An Envoy on ``ads`` (default: every replica of its region); ``kw`` go to EnvoyProc
        (``routing``, ``delta``, ``extra_bootstrap``, ``listener_port``, ``admin_port``)."""
        region = self.region(region)
        ads = ads or ",".join(r.target for r in self.replicas if r.region == region)
        envoy = EnvoyProc(directory or self.dir / "envoys", node_id=node_id, ads=ads, region=region,
                          host=self.host(region), **{**self.proc_kw, **kw})
        envoy.start(log_level, wait_ready=wait)
        self.procs.add(envoy.proc)
        self.envoys.append(envoy)
        return envoy

    def stop(self, part: Proc | Replica | EnvoyProc) -> None:
        """Stop one part now and forget it (e.g. a replica and Envoy replaced mid-run)."""
        proc = part if isinstance(part, Proc) else part.proc
        self.procs.remove(proc)
        for parts in (self.discoverers, self.replicas, self.envoys):
            if part in parts:
                parts.remove(part)

    # --- the whole ------------------------------------------------------
    @classmethod
    def from_spec(cls, directory: Path, spec: Spec, hosts: Mapping[str, Host] | None = None, **proc_kw) -> "Plane":
        """A started plane as ``spec`` says; each region's host from ``hosts`` (loopback by default)."""
        plane = cls(directory, hosts or {name: LOOPBACK for name in spec.regions}, **proc_kw)
        try:
            plane.start_redis()
            plane.start_dns()
            fly = ["--source", "fly", "--dns-server", plane.dns.addr, "--app", spec.app,
                   "--builder-port", str(spec.builder_port)]
            for name, region in spec.regions.items():
                for n in range(region.discoverers):
                    plane.start_discoverer(*fly, "--id", f"{name}-d{n + 1}",
                                           *region.discoverer_args, label=f"{name}-discoverer{n + 1}", region=name)
                for n in range(region.replicas):
                    plane.start_replica("--replica-id", f"{name}-xds{n + 1}", *region.replica_args,
                                        label=f"{name}-xds{n + 1}", region=name)
            for name, region in spec.regions.items():
                for n in range(region.envoys):
                    plane.start_envoy(f"{name}-envoy{n + 1}", region=name)
        except BaseException:
            plane.close()
            raise
        return plane

    def logs(self) -> str:
        return self.procs.logs()

    def close(self) -> None:
        self.procs.stop_all()
        if self.dns is not None:
            self.dns.stop()
        for server in reversed(self.redis_servers):
            server.stop()

    def __enter__(self) -> "Plane":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
