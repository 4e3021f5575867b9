"""Redis -> cache: one atomic load, then the changes stream.

A gap (a version jump, a trimmed stream, Redis restarted with other data)
triggers a full resync. While Redis is away the cache keeps its last
snapshot: Envoys are never sent an empty or partial set, nor a version older
than one already served while Redis can still catch up (see below).

When Redis comes back *behind* us (an older version, or our version with
another set: restarted empty, then a new leader raised the version to what it
knew), we keep serving ours and follow the stream; the first version past
ours is loaded whole, never applied as a diff to a set that is not ours.
Only after ``accept_reset_after`` seconds behind (``--accept-reset-after``,
30 s; with ``--redis-read-url`` only once the primary is behind too) is
Redis' set taken as it is: Redis and every discoverer lost their state
together, and versions restarted below ours may never pass them.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time

from shared import supervise
from shared.errors import CorruptState, StoreMisuse, StoreUnavailable, StreamGap
from shared.model import Builder
from shared.store import Change, Store

from . import metrics
from .cache import Cache, Pair

log = logging.getLogger(__name__)
MISUSE_BACKOFF = 2.0  # at most this long between attempts while Redis refuses us for a reason an operator must fix


class Follower:
    def __init__(self, store: Store, cache: Cache, *, block_ms: int = 1000, backoff: float = 0.5,
                 accept_reset_after: float = 30.0, primary: Store | None = None):
        self.store = store
        # With --redis-read-url, ``store`` is a replica and ``primary`` the Redis the leader writes:
        # a replica that stays behind is lag, not a reset, while the primary is not behind us.
        self.primary = primary if primary is not store else None
        self.cache = cache
        self.block_ms = block_ms
        self.backoff = backoff
        self._delay = backoff  # after a failed step; doubles while they keep failing
        self.builders: dict[str, Builder] = {}
        self.last_id = "0-0"
        self.loaded = asyncio.Event()
        self.behind = False  # Redis holds an older set than we serve: wait for a version past ours
        self.accept_reset_after = accept_reset_after
        self._behind_since = 0.0
        # The version the Redis we read held at our last read: with --redis-read-url a replica
        # that lags shows here (and in {xds}:replicas) while we keep serving what we had.
        self.source_version = 0

    async def run(self) -> None:
        """Follow Redis until cancelled. Whatever goes wrong, the cache keeps serving what it has;
        an unplanned exception is reported (``shared.supervise``) and the next step resyncs."""
        await supervise.forever(self.step, loop="follow", crashes=metrics.LOOP_CRASHES, backoff=self.backoff,
                                keeping=lambda: f"{self.serving()}, then resyncing")

    async def step(self) -> None:
        """One full load and the stream after it, until something breaks the chain."""
        try:
            await self.resync()
            self._delay = self.backoff
            await self._follow()
        except StreamGap as exc:
            metrics.RESYNCS.labels("gap").inc()
            log.warning("change stream gap: %s; resyncing from a full load", exc)
        except CorruptState as exc:
            metrics.RESYNCS.labels("corrupt").inc()
            log.error("%s; %s, resyncing", exc, self.serving())
            await asyncio.sleep(self._delay)
        except StoreMisuse as exc:
            metrics.RESYNCS.labels("refused").inc()
            delay, self._delay = self._delay, min(self._delay * 2, MISUSE_BACKOFF)
            supervise.report_misuse(exc, metrics.OPERATOR_ERRORS, f"{self.serving()}, resyncing in {delay:.1f}s", log)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
        except StoreUnavailable as exc:
            metrics.RESYNCS.labels("redis").inc()
            delay, self._delay = self._delay, min(self._delay * 2, 1.0)  # back within ~1 s of Redis returning
            log.warning("Redis unavailable (%s); %s, retrying in %.1fs", exc, self.serving(), delay)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))

    def serving(self) -> str:
        """What Envoys get meanwhile, for log lines."""
        if not self.loaded.is_set():
            return "not loaded yet (health stays NOT_SERVING)"
        return f"serving version {self.cache.version} with {len(self.builders)} builders"

    async def resync(self) -> None:
        started = time.perf_counter()
        snap = await self.store.load()
        for bid in snap.corrupt:
            metrics.CORRUPT_RECORDS.inc()
            log.error("builder %r in Redis is corrupt JSON; skipped", bid)
        self.last_id = snap.last_change_id
        self._saw(snap.version)
        if self._is_behind(snap.version, snap.builders) and not await self._reset_accepted():
            if not self.behind:
                self._behind_since = time.monotonic()
                metrics.RESYNCS.labels("behind").inc()
                log.warning("Redis holds version %d with %d builders, behind our version %d with %d; "
                            "serving ours until Redis passes it", snap.version, len(snap.builders),
                            self.cache.version, len(self.builders))
            self.behind = True
            return
        self.behind = False
        differs = snap.builders != self.builders  # an accepted reset may keep our version number
        self.builders = dict(snap.builders)
        if snap.version != self.cache.version or not self.loaded.is_set() or differs:
            self.cache.replace(snap.version, self.builders)
            metrics.VERSION.set(snap.version)
            log.info("loaded version %d: %d builders in %.0f ms", snap.version, len(self.builders),
                     (time.perf_counter() - started) * 1000)
        self.loaded.set()

    async def _reset_accepted(self) -> bool:
        """Behind for ``accept_reset_after`` seconds: Redis and every discoverer lost their state
        together (a discoverer restarts versions above all it knew); take Redis' set as it is.
        Never when we read a replica and the primary holds our version or a newer one: that
        replica only lags (or resynced from an older master), and we never serve an older set."""
        if not self.behind or time.monotonic() - self._behind_since < self.accept_reset_after:
            return False
        if self.primary is not None:
            try:
                primary = await self.primary.version()
            except StoreUnavailable as exc:
                log.warning("the read replica is behind our version %d and the primary cannot say whether "
                            "it is too (%s); serving ours", self.cache.version, exc)
                self._behind_since = time.monotonic()
                return False
            if primary >= self.cache.version:
                log.warning("the read replica has stayed behind our version %d for %.0fs while the primary "
                            "holds %d: it lags; serving ours", self.cache.version,
                            time.monotonic() - self._behind_since, primary)
                self._behind_since = time.monotonic()  # ask again after another wait, not every read
                return False
        log.error("Redis has stayed behind our version %d for %.0fs: accepting its set as a reset",
                  self.cache.version, time.monotonic() - self._behind_since)
        return True

    def _is_behind(self, version: int, builders: dict[str, Builder]) -> bool:
        """Redis went back in time (restarted empty or from an old dump, or a lagging replica)."""
        if not self.loaded.is_set():
            return False
        return version < self.cache.version or (version == self.cache.version and builders != self.builders)

    async def _follow(self) -> None:
        while True:
            changes = await self.store.read_changes(self.last_id, block_ms=self.block_ms)
            if not changes:
                current = await self.store.version()
                self._saw(current)
                if current > self.cache.version or (current != self.cache.version and not self.behind):
                    raise StreamGap(f"Redis is at version {current}, we are at {self.cache.version} "
                                    "and the stream is quiet")
                if self.behind and time.monotonic() - self._behind_since >= self.accept_reset_after:
                    raise StreamGap(f"Redis has stayed at version {current}, behind our {self.cache.version}")
                continue
            for change in changes:
                self.apply(change)

    def _saw(self, version: int) -> None:
        self.source_version = version
        metrics.SOURCE_VERSION.set(version)

    def apply(self, change: Change) -> None:
        self._saw(change.version)
        if change.version <= self.cache.version:
            self.last_id = change.stream_id
            return
        if self.behind:
            raise StreamGap(f"Redis passed our version {self.cache.version} with {change.version} after going back; "
                      "loading it whole")
        if change.version != self.cache.version + 1:
            raise StreamGap(f"expected version {self.cache.version + 1}, got {change.version}")
        records = {b.id: b for b in change.records}
        for bid in (*change.added, *change.updated):
            if bid not in records:  # checked before any change is made
                raise CorruptState(f"change {change.version} names {bid!r} without its record")
        pairs: list[Pair] = []
        for bid in change.removed:
            pairs.append((self.builders.pop(bid, None), None))
        for bid in (*change.added, *change.updated):
            new = records[bid]
            pairs.append((self.builders.get(bid), new))
            self.builders[bid] = new
        self.last_id = change.stream_id
        self.cache.apply(change.version, pairs, at=change.written_at)
        metrics.VERSION.set(change.version)
