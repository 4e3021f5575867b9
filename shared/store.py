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

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import AsyncIterator, Iterable

import orjson
import redis.asyncio.cluster as aiocluster

from . import scripts
from .connect import Client, translating, wrong_type_hint
from .errors import CorruptState, Fenced, RecordError, StoreMisuse, VersionConflict
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
    intents_cursor: str = "0-0"  # with load(intents=True): the last intent entry applied
    deregistered: dict[str, float] = field(default_factory=dict)  # with intents=True: id -> until DNS may re-add it


@dataclass(frozen=True, slots=True)
class IntentWrite:
    """What applying a batch of intents writes, in the same script call as the diff.

    ``outcomes`` are (request, outcome) pairs; an outcome whose status is not
    ``shared.outcomes.REJECTED`` gets the version the write leaves Redis at."""

    cursor: str
    outcomes: list[tuple[str, dict]] = field(default_factory=list)
    deregistered: dict[str, float] = field(default_factory=dict)  # id -> wall clock until DNS may re-add it
    deregistration_ended: list[str] = field(default_factory=list)  # ids DNS may add again
    trim_before: str | None = None  # entries of the intents stream older than this id may go
    ttl: int = 600  # seconds an outcome is kept

    def payload(self) -> dict:
        out = {"cursor": self.cursor, "ttl": self.ttl, "outcomes": [o for _, o in self.outcomes],
               "deregistered": [[k, v] for k, v in self.deregistered.items()],
               "deregistration_ended": list(self.deregistration_ended)}
        if self.trim_before:
            out["trim_before"] = self.trim_before
        return out


@dataclass(frozen=True, slots=True)
class IntentEntry:
    """One entry of the intents stream, as read (field values still bytes)."""

    entry_id: str
    fields: dict[bytes, bytes]


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

    @contextlib.asynccontextmanager
    async def _translating(self, what: str, *keys: str) -> AsyncIterator[None]:
        """``shared.connect.translating``; a WRONGTYPE also says which key holds what."""
        try:
            with translating(what, keys):
                yield
        except StoreMisuse as exc:
            if exc.code == "WRONGTYPE":
                await self._blame_wrong_type(exc)
            raise

    async def _blame_wrong_type(self, exc: StoreMisuse, within: float = 0.25) -> None:
        """Ask Redis the TYPE of each key the failed call touched; name the first one that is not ours.
        Best effort and bounded: the refusal is reported either way."""
        for key in (exc.key,) if exc.key else exc.keys:
            expected = self.keys.redis_type_of(key)
            try:
                async with asyncio.timeout(within):
                    actual = await self.client.type(key)
            except Exception:  # noqa: BLE001 - only a better message is lost
                return
            actual = actual.decode() if isinstance(actual, bytes) else str(actual)
            if expected and actual not in ("none", expected):
                exc.blame(key, wrong_type_hint(exc.keys, key, actual, expected))
                return

    # --- leadership -------------------------------------------------------
    async def try_acquire(self, holder: str, ttl_ms: int, version_floor: int = 0,
                          epoch_floor: int = 0) -> tuple[Lease | None, int]:
        """(the lease or None, the version Redis holds). The floor keeps versions monotonic
        when Redis comes back empty: the set restarts above every version ever served.
        A won lease's epoch is above ``epoch_floor`` (a failover may have lost the INCR of
        the caller's previous leadership)."""
        async with self._translating("acquiring the lease", *self.keys.fenced_write_keys()):
            epoch, version = await self._acquire(keys=self.keys.fenced_write_keys(),
                                                 args=[holder, ttl_ms, version_floor, epoch_floor])
        lease = Lease(holder, int(epoch), int(version)) if int(epoch) else None
        return lease, int(version)

    async def renew(self, lease: Lease, ttl_ms: int) -> bool:
        async with self._translating("renewing the lease", self.keys.leader, self.keys.epoch):
            return bool(await self._renew(keys=self.keys.fenced_write_keys(), args=[lease.holder, lease.epoch, ttl_ms]))

    async def release(self, lease: Lease) -> bool:
        async with self._translating("releasing the lease", self.keys.leader, self.keys.epoch):
            return bool(await self._release(keys=self.keys.fenced_write_keys(), args=[lease.holder, lease.epoch]))

    async def leader(self) -> tuple[str | None, int, int]:
        """(holder or None, epoch, remaining TTL in ms)."""
        async with self._translating("reading the leader", self.keys.leader, self.keys.epoch):
            await self._ready()
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.get(self.keys.leader).get(self.keys.epoch).pttl(self.keys.leader)
                holder, epoch, ttl = await pipe.execute()
        return (holder.decode() if holder else None, int(epoch or 0), int(ttl))

    # --- the builder set --------------------------------------------------
    async def apply(
        self, lease: Lease, expected_version: int, upsert: Iterable[Builder], remove: Iterable[str],
        *, floor: int = 0, touch: Iterable[Builder] = (), intents: IntentWrite | None = None,
    ) -> int:
        """Apply one diff as one fenced step; returns the new version (unchanged on a no-op).

        The new version is ``max(expected_version, floor) + 1``: a leader passes the highest
        version it has known, so a rewrite after Redis lost writes never reuses a number.
        ``touch`` rewrites records whose routing is unchanged (no new version); ``intents``
        advances the intents cursor and writes their outcomes in the same call."""
        body: dict = {
            "upsert": [[b.id, b.to_json().decode(), b.sni, b.route] for b in upsert],
            "remove": list(remove),
            "touch": [[b.id, b.to_json().decode()] for b in touch],
        }
        keys = self.keys.fenced_write_keys()
        if intents is not None:
            body["intents"] = intents.payload()
            keys = self.keys.intent_write_keys([r for r, _ in intents.outcomes])
        args = [lease.holder, lease.epoch, expected_version, self.stream_maxlen, orjson.dumps(body), floor]
        async with self._translating("writing the builder set", *keys):
            status, value = await self._apply(keys=keys, args=args)
        status = status.decode() if isinstance(status, bytes) else status
        value = value.decode() if isinstance(value, bytes) else value
        if status == "fenced":
            raise Fenced(f"write refused: {value} no longer ours (epoch {lease.epoch})")
        if status == "conflict":
            raise VersionConflict(expected_version, int(value))
        return int(value)

    async def load(self, *, intents: bool = False) -> SetSnapshot:
        """The version, every builder and the stream position, in one MULTI; with ``intents``
        (the leader) also the intents cursor and the deregistered ids."""
        async with self._translating("loading the builder set", self.keys.version, self.keys.builders,
                                     self.keys.changes, *((self.keys.intents_cursor, self.keys.deregistered)
                                                          if intents else ())):
            await self._ready()
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.get(self.keys.version).hgetall(self.keys.builders)
                pipe.xrevrange(self.keys.changes, count=1)
                if intents:
                    pipe.get(self.keys.intents_cursor).hgetall(self.keys.deregistered)
                version, raw, last, *extra = await pipe.execute()
        builders: dict[str, Builder] = {}
        corrupt: list[str] = []
        for key, value in raw.items():
            bid = key.decode(errors="replace")
            try:
                builders[bid] = Builder.from_json(value)
            except RecordError:
                corrupt.append(bid)
        last_id = last[0][0].decode() if last else "0-0"
        if not intents:
            return SetSnapshot(int(version or 0), builders, last_id, tuple(corrupt))
        cursor, dereg = extra
        return SetSnapshot(int(version or 0), builders, last_id, tuple(corrupt),
                           intents_cursor=cursor.decode() if cursor else "0-0",
                           deregistered={k.decode(errors="replace"): _float(v) for k, v in dereg.items()})

    async def _ready(self) -> None:
        """A cluster client learns the slots before its first transaction: redis-py queues
        cluster MULTI commands on a helper thread with its own event loop, which must not be
        the one to open the client's connections."""
        if self.cluster:
            await self.client.initialize()

    async def read_changes(self, after: str, *, block_ms: int, count: int = 1000) -> list[Change]:
        """Entries after stream id ``after``; waits up to block_ms for the first."""
        async with self._translating("following the changes stream", self.keys.changes):
            reply = await self.client.xread({self.keys.changes: after}, block=block_ms, count=count)
        return [Change.from_entry(sid, fields) for _, entries in reply or () for sid, fields in entries]

    # --- intents (the provisioner's API) ---------------------------------------
    async def read_intents(self, after: str, *, block_ms: int, count: int = 500) -> list[IntentEntry]:
        """Intent entries after stream id ``after``; waits up to block_ms for the first.
        Call it on a client of its own: a blocked read holds its connection."""
        async with self._translating("reading intents", self.keys.intents):
            reply = await self.client.xread({self.keys.intents: after}, block=block_ms, count=count)
        return [IntentEntry(sid.decode(), fields) for _, entries in reply or () for sid, fields in entries]

    async def append_intent(self, fields: dict[str, str]) -> str:
        """XADD one intent (what a provisioner does); its entry id."""
        async with self._translating("appending an intent", self.keys.intents):
            return (await self.client.xadd(self.keys.intents, fields)).decode()

    async def outcome(self, request: str) -> dict | None:
        """What became of one intent, while its outcome has not expired."""
        async with self._translating("reading an intent's outcome", self.keys.outcome(request)):
            raw = await self.client.get(self.keys.outcome(request))
        if raw is None:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CorruptState(f"outcome of {request!r} is unreadable") from exc

    async def recent_intents(self, count: int) -> list[IntentEntry]:
        """The newest ``count`` entries of the intents stream, newest first."""
        async with self._translating("reading the intents stream", self.keys.intents):
            reply = await self.client.xrevrange(self.keys.intents, count=count)
        return [IntentEntry(sid.decode(), fields) for sid, fields in reply]

    async def field(self, key: str, name: str) -> bytes | None:
        """One field of one of our hashes (a builder, a route, a rejection...), or None."""
        async with self._translating("reading one entry", key):
            return await self.client.hget(key, name)

    async def recent_changes(self, count: int) -> list[Change]:
        """The newest ``count`` entries of the changes stream, oldest first."""
        async with self._translating("reading the changes stream", self.keys.changes):
            reply = await self.client.xrevrange(self.keys.changes, count=count)
        return [Change.from_entry(sid, fields) for sid, fields in reversed(reply)]

    async def version(self) -> int:
        async with self._translating("reading the version", self.keys.version):
            return int(await self.client.get(self.keys.version) or 0)

    async def version_and_size(self) -> tuple[int, int]:
        """(the version, how many builder records), in one MULTI: the leader's cheap check
        that the set is still the one it wrote."""
        async with self._translating("reading the version and the size of the set", self.keys.version,
                                     self.keys.builders):
            await self._ready()
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.get(self.keys.version).hlen(self.keys.builders)
                version, size = await pipe.execute()
        return int(version or 0), int(size)

    # --- the Redis itself -----------------------------------------------------
    async def ping(self) -> None:
        async with self._translating("pinging"):
            await self.client.ping()

    async def replication(self) -> dict:
        """INFO replication (``role``, ``master_link_status``, ``master_last_io_seconds_ago``,
        ``master_link_down_since_seconds``, ...): whether this Redis hears from its master.
        The ACL user needs ``+info``."""
        async with self._translating("reading INFO replication"):
            return dict(await self.client.info("replication"))

    # --- status hashes ------------------------------------------------------
    async def put_status(self, key: str, entries: dict[str, dict], stale: Iterable[str] = ()) -> None:
        await self.put_statuses((key, entries, stale))

    async def put_statuses(self, *writes: tuple[str, dict[str, dict], Iterable[str]]) -> None:
        """(key, entries to set, fields to delete) for several status hashes, in one round trip."""
        async with self._translating("writing status", *(w[0] for w in writes)):
            async with self.client.pipeline(transaction=False) as pipe:
                for key, entries, stale in writes:
                    if entries:
                        pipe.hset(key, mapping={k: orjson.dumps(v) for k, v in entries.items()})
                    stale = list(stale)
                    if stale:
                        pipe.hdel(key, *stale)
                await pipe.execute()

    async def get_statuses(self, *keys: str) -> list[dict[str, dict]]:
        """Several status hashes in one round trip."""
        async with self._translating("reading status", *keys):
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                raws = await pipe.execute()
        return [_decode_status(raw) for raw in raws]

    async def get_status(self, key: str) -> dict[str, dict]:
        async with self._translating("reading status", key):
            raw = await self.client.hgetall(key)
        return _decode_status(raw)


def _decode_status(raw: dict) -> dict[str, dict]:
    out = {}
    for k, v in raw.items():
        try:
            out[k.decode()] = orjson.loads(v)
        except orjson.JSONDecodeError:
            out[k.decode()] = {"corrupt": True}
    return out


def _float(raw: bytes) -> float:
    try:
        return float(raw)
    except ValueError:
        return 0.0


def stream_id(value: str) -> tuple[int, int]:
    """A stream entry id ("ms-seq") as a sortable pair."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)
