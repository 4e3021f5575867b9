"""The test harness of the ADS server: builders, the fenced writer, in-process replicas.

A replica here is ``xds_server.replica.Replica``, the composition root that
``xds-server`` runs, on 127.0.0.1:0 with short timings so the tests stay fast.
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
from dataclasses import dataclass, field

from shared.config import RedisSettings
from shared.connect import aclose, connect
from shared.errors import Fenced, StoreUnavailable
from shared.model import Builder, make_builder, parse_networks
from shared.store import Store
from tests.support.procs import async_wait_until
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


class Writer:
    """The discoverer's write path: one fenced, versioned step per change."""

    def __init__(self, store: Store):
        self.store = store
        self.lease = None
        self.floor = 0  # version floor on (re)acquire, like the discoverer's highest known version

    async def acquire(self) -> None:
        self.lease, _ = await self._retrying(self.store.try_acquire, "tests-writer", 60_000, self.floor)
        assert self.lease is not None, "another holder has the lease"

    async def apply(self, upsert=(), remove=()) -> int:
        """Apply a diff; returns the new version."""
        for attempt in range(2):
            if self.lease is None:
                await self.acquire()
            try:
                version = await self._retrying(self.store.version)
                return await self.store.apply(self.lease, version, list(upsert), list(remove))
            except Fenced:  # Redis restarted: the lease is gone
                if attempt:
                    raise
                self.lease = None
        raise AssertionError("unreachable")

    @staticmethod
    async def _retrying(call, *args):
        """After a Redis restart the first command on a pooled connection fails once."""
        for attempt in range(3):
            try:
                return await call(*args)
            except StoreUnavailable:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.05)

    async def put(self, *builders: Builder) -> int:
        return await self.apply(upsert=builders)

    async def remove(self, *ids: str) -> int:
        return await self.apply(remove=ids)


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
    async def check():
        value = predicate()
        return await value if inspect.isawaitable(value) else value
    return await async_wait_until(check, timeout, interval=0.01, what=what or getattr(predicate, "__name__", None))
