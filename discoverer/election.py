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

from shared import supervise
from shared.connect import bounded, where
from shared.errors import StoreError, StoreMisuse
from shared.store import Lease, Store

from . import metrics

log = logging.getLogger(__name__)
MISUSE_BACKOFF = 1.0  # seconds between attempts while Redis refuses us for a reason an operator must fix


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


class Reachability:
    """Says at once, then every ``every`` seconds, that Redis cannot be reached and what we do;
    says when it is back; ``discoverer_redis_up`` shows it."""

    def __init__(self, where: str, every: float = 5.0):
        self.where = where  # "Redis at redis://host:port/0" (redacted)
        self.every = every
        self.down_since: float | None = None
        self._said_at = 0.0
        metrics.REDIS_UP.set(0)

    def up(self) -> None:
        metrics.REDIS_UP.set(1)
        if self.down_since is not None:
            log.info("%s is reachable again (after %.1fs)", self.where, time.monotonic() - self.down_since)
            self.down_since = None

    def down(self, exc: StoreError, next_step: str) -> None:
        metrics.REDIS_UP.set(0)
        now = time.monotonic()
        if self.down_since is None:
            self.down_since, self._said_at = now, 0.0
        if isinstance(exc, StoreMisuse) or now - self._said_at < self.every:
            return  # a refusal is reported by supervise.report_misuse
        self._said_at = now
        since = f" (for {now - self.down_since:.0f}s)" if now - self.down_since >= 1 else ""
        log.warning("cannot reach %s%s: %s; %s", self.where, since, exc, next_step)


class Election:
    def __init__(self, store: Store, holder: str, times: LeaseTimes):
        self.store = store
        self.reachability = Reachability(where(store.client))
        self.holder = holder
        self.times = times
        self._lease: Lease | None = None
        self._valid_until = 0.0
        self.version_floor = 0  # the highest version this process has known
        self.epoch_floor = 0  # the highest epoch this process has held
        self.changed = asyncio.Event()  # set whenever leadership is won or lost (the poll loop clears it)
        self.status_due = asyncio.Event()  # set with it, and on every write: the status publisher writes at once
        self.term = 0  # +1 on every leadership won: state of an older term is stale
        self._standing_by = False  # a take-over failed since the last change of role (logged once)

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
            self._role_changed()

    def _role_changed(self) -> None:
        self.changed.set()
        self.status_due.set()

    async def run(self) -> None:
        await supervise.forever(self.step, loop="election", crashes=metrics.LOOP_CRASHES, backoff=self.times.retry,
                                max_backoff=self.times.renew_every, keeping=self._state)

    async def step(self) -> None:
        """One election call (take or renew the lease), then the wait until the next."""
        delay = self.times.retry
        try:
            await self.campaign()
            self.reachability.up()
        except StoreError as exc:  # StoreUnavailable, StoreMisuse (Fenced and conflicts are not raised here)
            if self._lease is not None and self.lease() is None:
                self.step_down(f"could not renew before the lease ran out ({exc})")
            self.reachability.down(exc, self._next_step())
            if isinstance(exc, StoreMisuse):
                supervise.report_misuse(exc, metrics.OPERATOR_ERRORS, self._next_step(), log)
                delay = max(self.times.retry, MISUSE_BACKOFF)
        await asyncio.sleep(self.times.renew_every if self._lease else delay)

    def _state(self) -> str:
        return f"keeping the lease of epoch {self._lease.epoch}" if self._lease else "staying a standby"

    def _next_step(self) -> str:
        if self.lease() is not None:
            left = self._valid_until - time.monotonic()
            return (f"still the leader for {left:.1f}s unless a renewal gets through; "
                    f"retrying every {self.times.renew_every:.1f}s")
        return f"retrying every {self.times.retry:g}s as a standby"

    async def campaign(self) -> None:
        """One election call: take the lease if free, or renew ours (``step`` supervises and paces it;
        tests drive it step by step). Raises StoreError when Redis cannot answer."""
        if self._lease is None and self.reachability.down_since is not None:
            await self._connect()
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
                self._standing_by = False
                self._role_changed()
            elif not self._standing_by:
                self._standing_by = True
                log.info("the lease is held by another discoverer; standing by, trying every %gs",
                         self.times.retry)
            return
        if self.lease() is None:
            self.step_down("lease ran out on the local clock before a renewal")
            return
        if await bounded(self.store.renew(self._lease, self.ttl_ms), self.times.command_timeout, "renewing"):
            self._valid_until = sent + self.times.ttl - self.times.safety
        else:
            self.step_down("the lease in Redis is held by someone else or the epoch moved on")

    async def _connect(self) -> None:
        """After a failed call, a connection first, bounded by half the TTL rather than the call's bound.

        A timed-out call takes its connection with it, and a new one costs round trips (TCP, HELLO,
        CLIENT SETNAME) before the call: 1 s from a Redis 250 ms away, the whole bound. The script
        of each abandoned acquire still runs in Redis and takes the lease in our name, which we never
        learn: retried so, a far standby would keep the lease for ever and starve every other."""
        await bounded(self.store.ping(), max(self.times.ttl / 2, self.times.command_timeout), "connecting")

    async def release(self) -> None:
        lease, self._lease = self._lease, None
        if lease is None:
            return
        self._role_changed()
        try:
            if await bounded(self.store.release(lease), self.times.command_timeout, "releasing"):
                log.info("lease released (epoch %d) for a fast handover", lease.epoch)
        except StoreError as exc:
            log.warning("could not release the lease (%s); it expires in %.1fs", exc, self.times.ttl)
