"""A Redis that stays behind us (it and every discoverer lost their state) is accepted after a while."""
from __future__ import annotations

import asyncio
import contextlib

from xds_server.cache import Cache
from xds_server.follow import Follower
from xds_server.render import Renderer

from .harness import builder


async def test_redis_behind_for_long_is_accepted_as_a_reset(store, redis_server):
    lease = await store.acquire("w", 60_000)
    version = lease.version
    for name in "abcde":
        version = await store.apply(lease, version, [builder(name)], [])
    cache = Cache(Renderer("sni_cluster", "builders.internal"))
    follower = Follower(store, cache, block_ms=100, accept_reset_after=0.6)
    task = asyncio.ensure_future(follower.run())
    try:
        await asyncio.wait_for(follower.loaded.wait(), 5)
        assert cache.version == version == 5
        with redis_server.client() as c:
            c.flushall()
        fresh = await store.acquire("w2", 60_000)  # a discoverer that knew nothing: versions restart
        assert await store.apply(fresh, fresh.version, [builder("z")], []) == 1
        await asyncio.sleep(0.3)
        assert cache.version == 5 and set(cache.builders) == set("abcde"), "not before the wait"
        for _ in range(100):
            if cache.version == 1:
                break
            await asyncio.sleep(0.05)
        assert cache.version == 1 and set(cache.builders) == {"z"}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
