"""A standby far from Redis takes a free lease (discoverer/election.py ``_connect``).

A unit test with a fake store that behaves as a Redis 250 ms away does: a new connection costs
set-up time before the call, a call cut off by the election's bound takes its connection with
it, and the acquire script runs in Redis (the lease is taken in the standby's name) even when
its reply never arrives. Bounding set-up and call together, every attempt timed out and the
standby held a lease it never learned of, for ever; connecting first, it leads.
"""
from __future__ import annotations

import asyncio

import pytest

from discoverer.election import Election, LeaseTimes
from shared.store import Lease

pytestmark = pytest.mark.timeout(30)
TIMES = LeaseTimes(ttl=2.0, retry=0.01)  # each call bounded by 0.5 s
SET_UP, REPLY = 0.4, 0.15  # together over the bound; each under it


class FarStore:
    client = None

    def __init__(self):
        self.connected = False
        self.holder: str | None = None
        self.epoch = 0

    async def _connected(self) -> None:
        if not self.connected:
            await asyncio.sleep(SET_UP)
            self.connected = True

    async def ping(self) -> None:
        try:
            await self._connected()
        except asyncio.CancelledError:
            self.connected = False
            raise

    async def try_acquire(self, holder: str, ttl_ms: int, version_floor: int, epoch_floor: int):
        try:
            await self._connected()
            if self.holder not in (None, holder):
                return None, 0
            self.holder, self.epoch = holder, self.epoch + 1  # done in Redis, whatever becomes of the reply
            await asyncio.sleep(REPLY)
            return Lease(holder, self.epoch, 0), 0
        except asyncio.CancelledError:
            self.connected = False  # redis-py drops a connection whose reply it gave up on
            raise


async def test_a_far_standby_connects_first_and_takes_the_lease():
    store = FarStore()
    election = Election(store, "ams-d1", TIMES)
    async with asyncio.timeout(10):
        while election.lease() is None:
            await election.step()
    assert store.holder == "ams-d1" and election.lease().epoch == store.epoch
