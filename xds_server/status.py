"""Publishes this replica and its Envoys to ``{xds}:replicas`` / ``{xds}:envoys``.

Hash fields cannot expire on every Redis version we support, so each entry
carries a heartbeat; entries older than ``stale_after`` are pruned by any
replica and ignored by readers. An Envoy's ACK or NACK is published within
``coalesce`` seconds (ACKs that arrive meanwhile go in the same write), so
``xdsctl register --wait`` sees it at once; the heartbeat stays periodic.
A write gets ``write_timeout`` seconds (a partition holds the connection open
and never answers); ``failing_since`` says since when writes fail (cutoff.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from shared import resources as rs
from shared import supervise
from shared.errors import StoreError, StoreMisuse, StoreUnavailable
from shared.status import READS_PRIMARY, STALE_AFTER, EnvoyStatus, ReplicaStatus, read
from shared.store import Store

from . import metrics
from .cache import Cache
from .peers import Registry

log = logging.getLogger(__name__)


class StatusPublisher:
    def __init__(self, store: Store, cache: Cache, registry: Registry, *, replica: str, address: str,
                 every: float = 1.0, stale_after: float = STALE_AFTER, follower=None, reads: str = READS_PRIMARY,
                 coalesce: float = 0.01, tags: dict | None = None):
        self.store = store  # the primary: status is written there even when the set is read elsewhere
        self.follower = follower
        self.reads = reads  # READS_PRIMARY, or READS_REPLICA with --redis-read-url
        self.cache = cache
        self.registry = registry
        self.replica = replica
        self.address = address
        self.every = every
        self.stale_after = stale_after
        self.coalesce = coalesce
        self._last_full = 0.0
        self._lag_at = -float("inf")  # when xds_envoy_version_lag_max was last computed
        self.write_timeout = max(3 * every, 3.0)  # a full publish is a few round trips: 180 ms each from afar
        self.failing_since: float | None = None  # wall clock of the first failed write in a row
        self.tags = tags or {}  # constant fields of the replica's entry (host, workers)

    async def run(self) -> None:
        """Publish on every ACK or NACK (coalesced) and every ``every`` seconds; nothing that goes wrong ends it."""
        await supervise.forever(self.step, loop="status", crashes=metrics.LOOP_CRASHES, backoff=self.every,
                                keeping="status not published")

    async def step(self) -> None:
        changed = self.registry.changed
        changed.clear()  # before publishing: an ACK while we write is published next round
        try:
            await self._bounded_publish()
        except StoreMisuse as exc:
            supervise.report_misuse(exc, metrics.OPERATOR_ERRORS,
                                    f"status not published, trying again in {self.every:g}s", log)
        except StoreError as exc:
            log.debug("status not published: %s", exc)
        else:
            self.failing_since = None
            await self._wait_for_acks(changed)
            return
        if self.failing_since is None:
            self.failing_since = time.time()
        await asyncio.sleep(self.every)

    async def _bounded_publish(self) -> None:
        try:
            async with asyncio.timeout(self.write_timeout):
                await self.publish()
        except TimeoutError as exc:
            raise StoreUnavailable(f"writing status: no answer within {self.write_timeout:.1f}s") from exc

    async def _wait_for_acks(self, changed: asyncio.Event) -> None:
        """Until the heartbeat is due, or an Envoy ACKed or NACKed (plus ``coalesce`` to gather others)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.every):  # not wait_for: it can lose a cancellation on 3.11
                await changed.wait()
        if changed.is_set():
            await asyncio.sleep(self.coalesce)

    async def publish(self) -> None:
        now = time.time()
        full = now - self._last_full > self.stale_after / 3
        keys = self.store.keys
        peers = [p for p in self.registry.peers if full or p.dirty]
        envoys = {p.node_id: p.status(self.replica).to_json() for p in peers}
        if full or self.registry.refused_dirty:
            refused = self.registry.refused_status(self.replica, now)
            envoys = {**{n: e.to_json() for n, e in refused.items()}, **envoys}
        for p in peers:
            p.dirty = False  # before the writes: a change while they run marks the peer again
        left = set(self.registry.gone)
        if now - self._lag_at >= self.every:  # a pass over every peer: once per heartbeat, not per ACK burst
            self._lag_at = now
            lag = [self.cache.version - rs.version_number(v) for p in self.registry.peers for v in p.acked.values()]
            metrics.VERSION_LAG.set(max(lag, default=0))
        try:
            await self.store.put_statuses((keys.replicas, {self.replica: self._replica_status(now).to_json()}, ()),
                                          (keys.envoys, envoys, await self._ours(left)))  # one round trip
        except BaseException:
            for p in peers:  # not written: publish them again next time
                p.dirty = True
            self.registry.refused_dirty = bool(self.registry.refused)
            raise
        self.registry.gone -= left  # not clear(): others may have left while we wrote
        if full:
            self._last_full = now
            await self._prune(now)

    def _replica_status(self, now: float) -> ReplicaStatus:
        return ReplicaStatus(id=self.replica, address=self.address, streams=len(self.registry.peers),
                             version=self.cache.version, ready=self.cache.ready, heartbeat=round(now, 3),
                             reads=self.reads, routing=self.cache.renderer.mode, region_scope=self.cache.region_scope,
                             source_version=None if self.follower is None else self.follower.source_version,
                             **self.tags)

    async def _ours(self, node_ids: set[str]) -> list[str]:
        """Of the disconnected nodes, those whose entry is still ours (not taken by another replica)."""
        if not node_ids:
            return []
        current = read(await self.store.get_status(self.store.keys.envoys), EnvoyStatus)
        return [n for n in node_ids if n in current and current[n].replica == self.replica]

    async def _prune(self, now: float) -> None:
        for key, record in ((self.store.keys.envoys, EnvoyStatus), (self.store.keys.replicas, ReplicaStatus)):
            entries = read(await self.store.get_status(key), record)
            stale = [k for k, v in entries.items() if v.stale(now, self.stale_after)]
            if stale:
                await self.store.put_status(key, {}, stale=stale)

    async def withdraw(self) -> None:
        """On shutdown: remove this replica and the Envoys that were ours."""
        try:
            ours = await self._ours({p.node_id for p in self.registry.peers} | self.registry.gone)
            await self.store.put_status(self.store.keys.envoys, {}, stale=ours)
            await self.store.put_status(self.store.keys.replicas, {}, stale=[self.replica])
        except StoreError as exc:
            log.debug("status not withdrawn: %s", exc)

