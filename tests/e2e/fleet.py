"""A small fleet for end-to-end routing tests, one per routing mode.

A mode is a ``--routing`` value, or ``rs.FILTER_CHAINS_FCDS`` for filter_chains over
FCDS (``--routing filter_chains --fcds`` on both the xds-server and the bootstrap).

redis-server; one discoverer reading a JSON file (so a test sets the builder
set exactly); two xds-server replicas (region scope ``all`` and ``local``);
TLS stand-in builders on 127.0.0.2..21 and ::1; Envoys started on demand.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from harness.envoy import REFUSED, TIMED_OUT, EnvoyProc, NotRouted, insecure_context, raw_reach, tls_reach
from harness.host import free_port
from harness.plane import Plane
from harness.wait import seconds_until, wait_until
from shared import resources as rs

DOMAIN = "builders.internal"
N_BACKENDS = 21
ON_DEMAND_WAIT = 5  # the replicas' --on-demand-wait: how long Envoy holds a connection for a missing cluster
HELD = "tcp.builders.on_demand_cluster_attempt"  # on_demand: connections Envoy held while it asked for a cluster


def routing_args(mode: str) -> list[str]:
    """The flags that select ``mode``, for the xds-server and for ``xdsctl bootstrap`` alike."""
    if mode == rs.FILTER_CHAINS_FCDS:
        return ["--routing", rs.FILTER_CHAINS, "--fcds"]
    return ["--routing", mode]


def bid(n: int) -> str:
    return f"b{n:013x}"


def sni(builder_id: str) -> str:
    return f"{builder_id}.{DOMAIN}"


class Fleet(Plane):
    def __init__(self, directory: Path, mode: str):
        super().__init__(directory)
        self.mode = mode
        self.start_redis()
        self.port = free_port("127.0.0.2")
        self.file = self.dir / "builders.json"
        self.ctx = self.client_context()
        # stand-ins: b0 on ::1, b1..b20 on 127.0.0.2..21; regions alternate ord/ams
        self.backends = {bid(n): ("::1" if n == 0 else f"127.0.0.{n + 1}", "ord" if n % 2 else "ams")
                         for n in range(N_BACKENDS)}
        self.start_builders({sni(b): (ip, self.port) for b, (ip, _) in self.backends.items()})
        self.set_builders([])
        self.start_discoverer("--source", "file", "--file", str(self.file), "--removal-grace", "0.2",
                              "--poll-interval", "0.05", "--id", "d1", "--mass-removal-share", "1.0",
                              label="discoverer")
        self.ads = {}
        for scope in ("all", "local"):
            replica = self.start_replica(*routing_args(mode), "--region-scope", scope, "--replica-id", f"xds-{scope}",
                                         "--on-demand-wait", str(ON_DEMAND_WAIT), label=f"xds-{scope}")
            self.ads[scope] = replica.target

    def record(self, builder_id: str, ip: str | None = None, region: str | None = None) -> dict:
        known_ip, known_region = self.backends.get(builder_id, (None, "ord"))
        return {"id": builder_id, "app": "builder", "region": region or known_region,
                "ip": ip or known_ip, "port": self.port}

    def set_builders(self, records: list[dict], wait: bool = True) -> None:
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(records))
        os.replace(tmp, self.file)
        if wait and hasattr(self, "ads"):
            want = {sni(r["id"]) for r in records}
            wait_until(lambda: self.routes() == want, 5, what="routes in Redis")

    def routes(self) -> set[str]:
        return {k.decode() for k in self.redis.client().hkeys("{xds}:routes")}

    def envoy(self, node_id: str, *, scope: str = "all", region: str = "ord", delta: bool = False) -> EnvoyProc:
        routing = routing_args(self.mode)
        return self.start_envoy(node_id, ads=self.ads[scope], region=region, routing=routing[1], delta=delta,
                                extra_bootstrap=routing[2:])

    def reach(self, envoy: EnvoyProc, name: str, ctx=None, timeout: float = 2.0) -> str | NotRouted:
        return tls_reach(envoy.listener_port, name, ctx or self.ctx, timeout=timeout)

    def refused(self, envoy: EnvoyProc, name: str | None, *, timeout: float = 2.0, raw: bool = False) -> bool:
        """One connection with ``name`` (openssl's exact bytes when ``raw``): True when Envoy refuses it,
        False when it routes it. In on_demand a name Envoy has no cluster for is held while Envoy asks the
        server (up to --on-demand-wait, then refused): that hold counts as refused when Envoy's on-demand
        counter shows it. Any other timeout fails the test: a slow Envoy never passes for a refusal."""
        held = envoy.stat(HELD) if self.mode == "on_demand" else None
        got = raw_reach(envoy.listener_port, name, timeout=timeout) if raw else \
            self.reach(envoy, name, insecure_context(), timeout=timeout)
        if got is TIMED_OUT and held is not None and envoy.stat(HELD) > held:
            return True
        assert got is not TIMED_OUT, f"{name!r}: Envoy neither routed nor refused it within {timeout}s"
        assert got is REFUSED or not isinstance(got, NotRouted), f"{name!r}: {got!r}"
        return got is REFUSED

    def refused_in_the_end(self, envoy: EnvoyProc, name: str) -> None:
        """Refused, and in on_demand also once Envoy's hold runs out (a held connection is never routed)."""
        if self.mode != "on_demand":
            assert self.refused(envoy, name)
            return
        assert self.reach(envoy, name, insecure_context(), timeout=ON_DEMAND_WAIT + 3) is REFUSED


def eventually(predicate, timeout: float = 3.0, what: str = "condition") -> float:
    """Seconds until ``predicate`` held (raises TimeoutError after ``timeout``). Unlike wait_until,
    an exception from the predicate (a failed assert in it) fails at once."""
    return seconds_until(predicate, timeout, what=what, ignore=())
