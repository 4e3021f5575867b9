"""The one fenced writer: writes the builder set the way the discoverer leader does.

``Writer`` takes the leader lease and applies each change as one fenced, versioned
``Store.apply`` (one Lua call). It keeps the version it wrote last; when Redis answers
with another (someone else wrote) it retries once at that version, and when the lease is
gone (Redis restarted empty) it takes the lease again above ``floor``. Tests and benches use
it in place of a discoverer when they need to set the builder set exactly.
"""
from __future__ import annotations

import asyncio

from shared.connect import aclose, connect
from shared.errors import Fenced, StoreUnavailable, VersionConflict
from shared.keys import Keys
from shared.model import Builder
from shared.store import Lease, Store


async def acquire(store: Store, holder: str, ttl_ms: int, version_floor: int = 0) -> Lease | None:
    """The lease, or None when another holder has it."""
    return (await store.try_acquire(holder, ttl_ms, version_floor))[0]


class Writer:
    """``async with Writer.connect(url) as w: await w.apply([...])``, or ``Writer(store)`` on a store
    the caller owns. ``floor``: the version floor when the lease is (re)acquired."""

    def __init__(self, store: Store, *, holder: str = "harness-writer", ttl_ms: int = 600_000, owned: bool = False):
        self.store, self.holder, self.ttl_ms, self.owned = store, holder, ttl_ms, owned
        self.lease: Lease | None = None
        self.version: int | None = None
        self.floor = 0

    @classmethod
    def connect(cls, url: str, **kw) -> "Writer":
        return cls(Store(connect(url, name=kw.pop("name", "harness")), Keys()), owned=True, **kw)

    async def __aenter__(self) -> "Writer":
        await self.acquire()
        return self

    async def __aexit__(self, *exc) -> None:
        if self.owned:
            await aclose(self.store.client)

    async def acquire(self) -> None:
        self.lease, self.version = await self._retrying(self.store.try_acquire, self.holder, self.ttl_ms, self.floor)
        assert self.lease is not None, "another holder has the lease"

    async def apply(self, upsert=(), remove=()) -> int:
        """Apply one change; returns the new version."""
        for attempt in range(3):
            if self.lease is None:
                await self.acquire()
            try:
                self.version = await self.store.apply(self.lease, self.version, list(upsert), list(remove))
                return self.version
            except VersionConflict as exc:  # another writer moved the set: write on top of what Redis holds
                self.version = exc.actual
            except Fenced:  # Redis restarted: the lease is gone
                self.lease = None
            except StoreUnavailable:  # after a Redis restart the first command on a pooled connection fails once
                if attempt == 2:
                    raise
                await asyncio.sleep(0.05)
        raise Fenced("the writer lost its lease or version three times in a row")

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
