"""The test harness of the ADS server: builders, the fenced writer (harness.writer), in-process replicas.

A replica here is ``xds_server.replica.Replica``, the composition root that
``xds-server`` runs, on 127.0.0.1:0 with short timings so the tests stay fast.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from harness.wait import async_wait_until
from harness.writer import Writer as FencedWriter
from shared.config import RedisSettings
from shared.model import Builder, make_builder, parse_networks
from shared.store import Store
from xds_server.config import XdsConfig
from xds_server.replica import Replica

SNI_TEMPLATE = "{id}.builders.internal"
DOMAIN = "builders.internal"
ALLOWED = parse_networks(["127.0.0.0/8", "::1/128", "fdaa::/16"])
_ips = itertools.count(2)


def sni(bid: str) -> str:
    return f"{bid.lower()}.{DOMAIN}"


def builder(bid: str, region: str = "ord", *, ip: str | None = None, port: int = 443, app: str = "app") -> Builder:
    if ip is None:
        n = next(_ips) % 60000
        ip = f"127.0.{n // 250}.{n % 250 + 2}"
    return make_builder({"id": bid, "app": app, "region": region, "ip": ip, "port": port},
                        sni_template=SNI_TEMPLATE, port=443, allowed=ALLOWED)


class Writer(FencedWriter):
    """The harness's fenced writer (the discoverer's write path) with the tests' holder and a 60 s lease."""

    def __init__(self, store: Store):
        super().__init__(store, holder="tests-writer", ttl_ms=60_000)


class TestReplica(Replica):
    """The production replica (xds_server.replica), plus waits for tests."""

    async def wait_version(self, version: int, timeout: float = 5.0) -> None:
        async def reached():
            return self.cache.version == version
        await async_wait_until(reached, timeout, interval=0.01, what=f"replica at version {version}")


async def start_replica(redis_url: str, *, routing: str = "filter_chains", fcds: bool = False, region_scope: str = "all",
                        on_demand_wait: float = 5.0, max_streams: int = 100, replica_id: str = "r1",
                        block_ms: int = 100, publish_every: float = 0.1,
                        accept_reset_after: float = 30.0, push_interval: float = 0.1) -> TestReplica:
    """One replica, wired by the same composition root as xds-server, with short timings."""
    cfg = XdsConfig(redis=RedisSettings(url=redis_url), listen="127.0.0.1:0", routing=routing, fcds=fcds, domain=DOMAIN,
                    region_scope=region_scope, on_demand_wait=on_demand_wait, push_interval=push_interval,
                    max_streams=max_streams,
                    replica_id=replica_id, follow_block_ms=block_ms, follow_backoff=0.1,
                    status_every=publish_every, accept_reset_after=accept_reset_after)
    return await TestReplica(cfg).start()


async def eventually(predicate, timeout: float = 3.0, what: str | None = None):
    """Poll a predicate (plain or async) until it is truthy; its value. Bounded by ``timeout``."""
    return await async_wait_until(predicate, timeout, interval=0.01, what=what)
