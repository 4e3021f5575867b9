"""The test harness of the ADS server: builders, the fenced writer, in-process replicas.

A replica here is wired exactly like ``xds_server.main.serve`` (renderer, cache,
registry, ``server.build`` on 127.0.0.1:0, follower, status publisher, health
set after the first load), with short timings so the tests stay fast.
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
from xds_server import server
from xds_server.cache import Cache
from xds_server.config import XdsConfig
from xds_server.follow import Follower
from xds_server.peers import ListenerDefaults, Registry
from xds_server.render import Renderer
from xds_server.status import StatusPublisher

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
        self.lease = await self._retrying(self.store.acquire, "tests-writer", 60_000, self.floor)
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


@dataclass
class Replica:
    cfg: XdsConfig
    cache: Cache
    registry: Registry
    follower: Follower
    publisher: StatusPublisher
    grpc_server: object
    health: object
    port: int
    redis: object
    tasks: list[asyncio.Task] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def wait_version(self, version: int, timeout: float = 5.0) -> None:
        async def reached():
            return self.cache.version == version
        await async_wait_until(reached, timeout, interval=0.01, what=f"replica at version {version}")

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.grpc_server.stop(None)
        await aclose(self.redis)


async def start_replica(redis_url: str, *, routing: str = "filter_chains", region_scope: str = "all",
                        on_demand_wait: float = 5.0, max_streams: int = 100, replica_id: str = "r1",
                        block_ms: int = 100, publish_every: float = 0.1,
                        accept_reset_after: float = 30.0) -> Replica:
    """One replica wired like xds_server.main.serve, with short timings for tests."""
    cfg = XdsConfig(redis=RedisSettings(url=redis_url), listen="127.0.0.1:0", routing=routing, domain=DOMAIN,
                    region_scope=region_scope, on_demand_wait=on_demand_wait, max_streams=max_streams,
                    replica_id=replica_id)
    renderer = Renderer(cfg.routing, cfg.domain, connect_timeout=cfg.connect_timeout,
                        on_demand_timeout=cfg.on_demand_wait)
    cache = Cache(renderer, region_scope=cfg.region_scope)
    registry = Registry(cache, ListenerDefaults(address=cfg.listener_address, port=cfg.listener_port))
    grpc_server, health, port = server.build(cache, registry, cfg)
    await server.set_health(health, False)
    await grpc_server.start()
    client = connect(redis_url, name=f"xds:{replica_id}")
    store = Store(client, cfg.redis.keys)
    follower = Follower(store, cache, block_ms=block_ms, backoff=0.1, accept_reset_after=accept_reset_after)
    publisher = StatusPublisher(store, cache, registry, replica=replica_id, address=f"127.0.0.1:{port}",
                                every=publish_every)
    replica = Replica(cfg, cache, registry, follower, publisher, grpc_server, health, port, client)

    async def ready() -> None:
        await follower.loaded.wait()
        await server.set_health(health, True)

    loop = asyncio.get_running_loop()
    replica.tasks = [loop.create_task(follower.run()), loop.create_task(publisher.run()),
                     loop.create_task(ready())]
    return replica


async def eventually(predicate, timeout: float = 3.0, what: str | None = None):
    """Poll a predicate (plain or async) until it is truthy; its value. Bounded by ``timeout``."""
    async def check():
        value = predicate()
        return await value if inspect.isawaitable(value) else value
    return await async_wait_until(check, timeout, interval=0.01, what=what or getattr(predicate, "__name__", None))
