"""Leader election: a Redis lease with a fencing epoch.

The holder renews every ttl/4 with a compare-and-extend script. It judges its
own lease on its monotonic clock and stops writing *before* the lease can have
expired in Redis (``safety`` before the end), so a paused or partitioned
leader never writes after a standby may have taken over; the epoch check in
the write script catches whatever slips through.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, TypeVar

import redis.exceptions

from shared.errors import StoreUnavailable
from shared.store import Lease, Store

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class LeaseTimes:
    ttl: float = 2.0
    retry: float = 0.1  # how often a standby tries to take over

    @property
    def renew_every(self) -> float:
        return self.ttl / 4

    @property
    def safety(self) -> float:
        return max(self.ttl * 0.2, 0.1)

    @property
    def command_timeout(self) -> float:
        """No Redis call may take longer: a hung Redis must not freeze the election."""
        return min(1.0, self.ttl / 4)


async def bounded(aw: Awaitable[T], seconds: float, what: str) -> T:
    """Await a Redis call for at most ``seconds``; a hang becomes StoreUnavailable.

    Redis' refusals (ResponseError) become StoreUnavailable too. A timeout
    around the call rather than the client's socket_timeout: with Python 3.11,
    redis-py's socket timeouts (asyncio.wait_for) can swallow a task's
    cancellation, and a discoverer told to stop would then never stop.
    """
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except TimeoutError as exc:
        raise StoreUnavailable(f"{what}: no answer from Redis within {seconds:.1f}s") from exc
    except redis.exceptions.ResponseError as exc:
        # READONLY (a failover made it a replica), OOM, LOADING...: retried like an outage
        # instead of crashing the process, and logged with Redis' own words.
        raise StoreUnavailable(f"{what}: Redis refused: {exc}") from exc


class Election:
    def __init__(self, store: Store, holder: str, times: LeaseTimes):
        self.store = store
        self.holder = holder
        self.times = times
        self._lease: Lease | None = None
        self._valid_until = 0.0
        self.version_floor = 0  # the highest version this process has known
        self.epoch_floor = 0  # the highest epoch this process has held
        self.changed = asyncio.Event()  # set whenever leadership is won or lost
        self.term = 0  # +1 on every leadership won: state of an older term is stale

    @property
    def ttl_ms(self) -> int:
        return int(self.times.ttl * 1000)

    def lease(self) -> Lease | None:
        """The lease when we may still write, by our own clock; else None."""
        if self._lease is not None and time.monotonic() < self._valid_until:
            return self._lease
        return None

    def step_down(self, why: str) -> None:
        if self._lease is not None:
            log.warning("leadership lost (epoch %d): %s; now a standby", self._lease.epoch, why)
            self._lease = None
            self.changed.set()

    async def run(self) -> None:
        while True:
            try:
                await self._tick()
            except StoreUnavailable as exc:
                if self._lease is not None and self.lease() is None:
                    self.step_down(f"could not renew before the lease ran out ({exc})")
                log.debug("election: %s", exc)
            await asyncio.sleep(self.times.renew_every if self._lease else self.times.retry)

    async def _tick(self) -> None:
        sent = time.monotonic()
        if self._lease is None:
            lease, version = await bounded(
                self.store.try_acquire(self.holder, self.ttl_ms, self.version_floor, self.epoch_floor),
                self.times.command_timeout, "acquiring the lease")
            self.version_floor = max(self.version_floor, version)  # standbys track it too
            if lease is not None:
                self._lease, self._valid_until = lease, sent + self.times.ttl - self.times.safety
                self.version_floor = max(self.version_floor, lease.version)
                self.epoch_floor = max(self.epoch_floor, lease.epoch)
                self.term += 1
                log.info("leadership won: epoch %d at version %d", lease.epoch, lease.version)
                self.changed.set()
            return
        if self.lease() is None:
            self.step_down("lease ran out on the local clock before a renewal")
            return
        if await bounded(self.store.renew(self._lease, self.ttl_ms), self.times.command_timeout, "renewing"):
            self._valid_until = sent + self.times.ttl - self.times.safety
        else:
            self.step_down("the lease in Redis is held by someone else or the epoch moved on")

    async def release(self) -> None:
        lease, self._lease = self._lease, None
        if lease is None:
            return
        try:
            if await bounded(self.store.release(lease), self.times.command_timeout, "releasing"):
                log.info("lease released (epoch %d) for a fast handover", lease.epoch)
        except StoreUnavailable as exc:
            log.warning("could not release the lease (%s); it expires in %.1fs", exc, self.times.ttl)
