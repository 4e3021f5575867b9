"""A Redis that stays behind us (it and every discoverer lost their state) is accepted after a while."""
from __future__ import annotations

import asyncio
import contextlib
import time

from harness.writer import acquire
from xds_server.cache import Cache
from xds_server.follow import Follower
from xds_server.render import Renderer

from .harness import builder, eventually


async def five_versions_then_a_reset(store, redis_server, follower: Follower) -> None:
    """Versions 1-5 (a..e) loaded by ``follower``; then Redis loses everything and restarts at version 1 (z)."""
    lease = await acquire(store, "w", 60_000)
    version = lease.version
    for name in "abcde":
        version = await store.apply(lease, version, [builder(name)], [])
    assert version == 5
    await eventually(lambda: follower.cache.version == 5, 5, what="the follower at version 5")
    with redis_server.client() as c:
        c.flushall()
    fresh = await acquire(store, "w2", 60_000)  # a discoverer that knew nothing: versions restart
    assert await store.apply(fresh, fresh.version, [builder("z")], []) == 1


@contextlib.asynccontextmanager
async def running(follower: Follower):
    task = asyncio.ensure_future(follower.run())
    try:
        yield follower
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_for_the_reset(cache: Cache, timeout: float) -> None:
    await eventually(lambda: cache.version == 1, timeout, what="the reset accepted")
    assert set(cache.builders) == {"z"}


async def test_redis_behind_for_long_is_accepted_as_a_reset(store, redis_server):
    cache = Cache(Renderer("sni_cluster", "builders.internal"))
    published: list[float] = []  # when the cache moved, on the follower's own clock
    cache.watch(lambda: published.append(time.monotonic()))
    async with running(Follower(store, cache, block_ms=100, accept_reset_after=0.6)) as follower:
        await five_versions_then_a_reset(store, redis_server, follower)
        await eventually(lambda: follower.behind, 5, what="the follower saw Redis behind")
        assert cache.version == 5 and set(cache.builders) == set("abcde"), "not at once"
        behind_since, published[:] = follower._behind_since, []
        await wait_for_the_reset(cache, 5)
        assert published and published[0] - behind_since >= 0.6, "not before the wait"


class Primary:
    """The primary's version as a replica reading a Redis replica (--redis-read-url) asks it."""

    def __init__(self, version: int):
        self.v = version
        self.asked = 0

    async def version(self) -> int:
        self.asked += 1
        return self.v


async def test_a_read_replica_behind_us_is_lag_not_a_reset_while_the_primary_is_not(store, redis_server):
    cache = Cache(Renderer("sni_cluster", "builders.internal"))
    primary = Primary(7)
    async with running(Follower(store, cache, block_ms=100, accept_reset_after=0.4, primary=primary)) as follower:
        # the read replica resynced from a master that lost everything
        await five_versions_then_a_reset(store, redis_server, follower)
        await eventually(lambda: follower.behind, 5, what="the follower saw the read replica behind")
        asked = primary.asked
        await eventually(lambda: primary.asked >= asked + 3, 10, what="three reset waits, each asking the primary")
        assert cache.version == 5 and set(cache.builders) == set("abcde")
        assert follower.source_version == 1
        primary.v = 1  # the primary is behind us too: Redis and the discoverers lost their state
        await wait_for_the_reset(cache, 3)
