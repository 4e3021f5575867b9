"""Fenced writes and atomic reads of the builder set: the only place that speaks Lua.

Invariant: a write is applied only when the caller still holds the lease with
the current epoch and expects the version Redis holds; otherwise it is a no-op
that tells why (Fenced, VersionConflict).

The same code runs on one node, behind Sentinel and on Redis Cluster: every
key of a prefix carries one hash tag, so each script call and each MULTI
touches one slot (one shard). On Cluster the atomic reads use redis-py's
transactional cluster pipeline (same-slot MULTI/EXEC on the slot's master);
XREAD BLOCK goes to the slot's node.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import orjson
import redis.asyncio.cluster as aiocluster

from . import scripts
from .connect import Client, translating
from .errors import CorruptState, Fenced, RecordError, VersionConflict
from .keys import Keys
from .model import Builder

DEFAULT_STREAM_MAXLEN = 10_000


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str
    epoch: int
    version: int


@dataclass(frozen=True, slots=True)
class SetSnapshot:
    """The builder set as one atomic read saw it."""

    version: int
    builders: dict[str, Builder]
    last_change_id: str  # stream id to follow from ("0-0" when the stream is empty)
    corrupt: tuple[str, ...] = ()  # ids whose JSON could not be parsed


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the changes stream."""

    stream_id: str
    version: int
    epoch: int
    added: tuple[str, ...]
    removed: tuple[str, ...]
    updated: tuple[str, ...]
    records: tuple[Builder, ...] = field(default=())

    @property
    def written_at(self) -> float:
        """Wall-clock seconds when Redis appended the entry (its id is milliseconds-sequence)."""
        return int(self.stream_id.split("-", 1)[0]) / 1000

    @classmethod
    def from_entry(cls, stream_id: bytes | str, fields: dict) -> "Change":
        def get(name: str) -> bytes:
            return fields.get(name.encode(), fields.get(name, b"[]"))

        try:
            return cls(
                stream_id=stream_id.decode() if isinstance(stream_id, bytes) else stream_id,
                version=int(get("version")),
                epoch=int(get("epoch")),
                added=tuple(orjson.loads(get("added"))),
                removed=tuple(orjson.loads(get("removed"))),
                updated=tuple(orjson.loads(get("updated"))),
                records=tuple(Builder.from_json(orjson.dumps(r)) for r in orjson.loads(get("records"))),
            )
        except (ValueError, TypeError, orjson.JSONDecodeError, RecordError) as exc:
            raise CorruptState(f"change entry {stream_id!r} is unreadable: {exc}") from exc


class Store:
    """Typed access to one prefix of one Redis."""

    def __init__(self, client: Client, keys: Keys, *, stream_maxlen: int = DEFAULT_STREAM_MAXLEN):
        self.client = client
        self.keys = keys
        self.cluster = isinstance(client, aiocluster.RedisCluster)
        self.stream_maxlen = stream_maxlen
        self._acquire = client.register_script(scripts.ACQUIRE)
        self._renew = client.register_script(scripts.RENEW)
        self._release = client.register_script(scripts.RELEASE)
        self._apply = client.register_script(scripts.APPLY)

    # --- leadership -------------------------------------------------------
    async def acquire(self, holder: str, ttl_ms: int, version_floor: int = 0) -> Lease | None:
        return (await self.try_acquire(holder, ttl_ms, version_floor))[0]

    async def try_acquire(self, holder: str, ttl_ms: int, version_floor: int = 0,
                          epoch_floor: int = 0) -> tuple[Lease | None, int]:
        """(the lease or None, the version Redis holds). The floor keeps versions monotonic
        when Redis comes back empty: the set restarts above every version ever served.
        A won lease's epoch is above ``epoch_floor`` (a failover may have lost the INCR of
        the caller's previous leadership)."""
        with translating("acquiring the lease"):
            epoch, version = await self._acquire(keys=self.keys.fenced_write_keys(),
                                                 args=[holder, ttl_ms, version_floor, epoch_floor])
        lease = Lease(holder, int(epoch), int(version)) if int(epoch) else None
        return lease, int(version)

    async def renew(self, lease: Lease, ttl_ms: int) -> bool:
        with translating("renewing the lease"):
            return bool(await self._renew(keys=self.keys.fenced_write_keys(), args=[lease.holder, lease.epoch, ttl_ms]))

    async def release(self, lease: Lease) -> bool:
        with translating("releasing the lease"):
            return bool(await self._release(keys=self.keys.fenced_write_keys(), args=[lease.holder, lease.epoch]))

    async def leader(self) -> tuple[str | None, int, int]:
        """(holder or None, epoch, remaining TTL in ms)."""
        with translating("reading the leader"):
            await self._ready()
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.get(self.keys.leader).get(self.keys.epoch).pttl(self.keys.leader)
                holder, epoch, ttl = await pipe.execute()
        return (holder.decode() if holder else None, int(epoch or 0), int(ttl))

    # --- the builder set --------------------------------------------------
    async def apply(
        self, lease: Lease, expected_version: int, upsert: Iterable[Builder], remove: Iterable[str],
        *, floor: int = 0,
    ) -> int:
        """Apply one diff as one fenced step; returns the new version (unchanged on a no-op).

        The new version is ``max(expected_version, floor) + 1``: a leader passes the highest
        version it has known, so a rewrite after Redis lost writes never reuses a number."""
        payload = orjson.dumps(
            {
                "upsert": [[b.id, b.to_json().decode(), b.sni, b.route] for b in upsert],
                "remove": list(remove),
            }
        )
        args = [lease.holder, lease.epoch, expected_version, self.stream_maxlen, payload, floor]
        with translating("writing the builder set"):
            status, value = await self._apply(keys=self.keys.fenced_write_keys(), args=args)
        status = status.decode() if isinstance(status, bytes) else status
        value = value.decode() if isinstance(value, bytes) else value
        if status == "fenced":
            raise Fenced(f"write refused: {value} no longer ours (epoch {lease.epoch})")
        if status == "conflict":
            raise VersionConflict(expected_version, int(value))
        return int(value)

    async def load(self) -> SetSnapshot:
        """The version, every builder and the stream position, in one MULTI."""
        with translating("loading the builder set"):
            await self._ready()
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.get(self.keys.version).hgetall(self.keys.builders)
                pipe.xrevrange(self.keys.changes, count=1)
                version, raw, last = await pipe.execute()
        builders: dict[str, Builder] = {}
        corrupt: list[str] = []
        for key, value in raw.items():
            bid = key.decode(errors="replace")
            try:
                builders[bid] = Builder.from_json(value)
            except RecordError:
                corrupt.append(bid)
        last_id = last[0][0].decode() if last else "0-0"
        return SetSnapshot(int(version or 0), builders, last_id, tuple(corrupt))

    async def _ready(self) -> None:
        """A cluster client learns the slots before its first transaction: redis-py queues
        cluster MULTI commands on a helper thread with its own event loop, which must not be
        the one to open the client's connections."""
        if self.cluster:
            await self.client.initialize()

    async def read_changes(self, after: str, *, block_ms: int, count: int = 1000) -> list[Change]:
        """Entries after stream id ``after``; waits up to block_ms for the first."""
        with translating("following the changes stream"):
            reply = await self.client.xread({self.keys.changes: after}, block=block_ms, count=count)
        return [Change.from_entry(sid, fields) for _, entries in reply or () for sid, fields in entries]

    async def recent_changes(self, count: int) -> list[Change]:
        """The newest ``count`` entries of the changes stream, oldest first."""
        with translating("reading the changes stream"):
            reply = await self.client.xrevrange(self.keys.changes, count=count)
        return [Change.from_entry(sid, fields) for sid, fields in reversed(reply)]

    async def version(self) -> int:
        with translating("reading the version"):
            return int(await self.client.get(self.keys.version) or 0)

    # --- status hashes ------------------------------------------------------
    async def put_status(self, key: str, entries: dict[str, dict], stale: Iterable[str] = ()) -> None:
        with translating("writing status"):
            async with self.client.pipeline(transaction=False) as pipe:
                if entries:
                    pipe.hset(key, mapping={k: orjson.dumps(v) for k, v in entries.items()})
                stale = list(stale)
                if stale:
                    pipe.hdel(key, *stale)
                await pipe.execute()

    async def get_status(self, key: str) -> dict[str, dict]:
        with translating("reading status"):
            raw = await self.client.hgetall(key)
        out = {}
        for k, v in raw.items():
            try:
                out[k.decode()] = orjson.loads(v)
            except orjson.JSONDecodeError:
                out[k.decode()] = {"corrupt": True}
        return out
