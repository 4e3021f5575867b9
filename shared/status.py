"""The status entries processes publish in Redis: one record type per hash, and when one is stale.

    {xds}:replicas     replica id -> ReplicaStatus     written by xds_server.status
    {xds}:envoys       node id    -> EnvoyStatus       written by xds_server.status (from xds_server.peers)
    {xds}:discoverers  holder     -> DiscovererStatus  written by discoverer.status

Writers build a record and store ``to_json()``; readers (xdsctl, the pruners) call ``from_json`` on
whatever the hash holds. Reading never raises: a field that is missing or of the wrong type (an older
writer, an entry written by hand, ``{"corrupt": true}`` for one that is not JSON) reads as its default.

Hash fields cannot expire on Redis 6.2, so each entry carries a wall-clock stamp (``heartbeat``;
``updated_at`` for discoverers). An entry whose stamp is older than ``STALE_AFTER`` seconds, or that
has no readable stamp, belongs to a process that is gone: readers hide it, its writers prune it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import resources as rs

STALE_AFTER = 15.0
# wire values of a few fields
LEADER, STANDBY = "leader", "standby"  # DiscovererStatus.role
READS_PRIMARY, READS_REPLICA = "primary", "replica"  # ReplicaStatus.reads


def stale(stamp: Any, now: float, after: float = STALE_AFTER) -> bool:
    """A wall-clock stamp older than ``after`` seconds; one that is not a number counts as stale."""
    try:
        return now - float(stamp) > after
    except (TypeError, ValueError):
        return True


def _text(v):
    return v if isinstance(v, str) else None


def _int(v):
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _number(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _bool(v):
    return v if isinstance(v, bool) else None


def _mapping(v):
    return v if isinstance(v, dict) else None


def _version(v):
    return rs.version_number(v) if isinstance(v, (int, str)) and not isinstance(v, bool) else None


_READ = {"str": _text, "str | None": _text, "int": _int, "int | None": _int, "float | None": _number,
         "bool": _bool, "dict": _mapping, "dict | None": _mapping, "version": _version}


class _Entry:
    """to_json/from_json for the records below: the wire name of a field is its name, except those in
    WIRE; fields in OPTIONAL are left out of the JSON while they are None."""
    __slots__ = ()
    WIRE: ClassVar[dict[str, str]] = {}
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    STAMP: ClassVar[str] = "heartbeat"
    VERSIONS: ClassVar[frozenset[str]] = frozenset()  # fields that hold a version (12, "12-bridge")

    def to_json(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in self.OPTIONAL:
                continue
            out[self.WIRE.get(f.name, f.name)] = value
        return out

    @classmethod
    def from_json(cls, raw: Any):
        raw = raw if isinstance(raw, dict) else {}
        values = {}
        for f in dataclasses.fields(cls):
            read = _READ["version" if f.name in cls.VERSIONS else f.type]
            value = read(raw.get(cls.WIRE.get(f.name, f.name)))
            if value is not None:
                values[f.name] = value
        return cls(**values)

    def stale(self, now: float, after: float = STALE_AFTER) -> bool:
        return stale(getattr(self, self.STAMP), now, after)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaStatus(_Entry):
    """One xds-server replica (``xds-server --workers``: one per worker)."""
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"source_version", "host", "workers", "worker", "region"})
    VERSIONS: ClassVar[frozenset[str]] = frozenset({"version", "source_version"})
    id: str = ""
    address: str = ""
    streams: int = 0
    version: int = 0  # of the set it serves; -1 until it has loaded one
    ready: bool = True
    heartbeat: float | None = None
    reads: str = READS_PRIMARY  # READS_REPLICA with --redis-read-url
    routing: str | None = None  # its --routing
    region_scope: str | None = None  # its --region-scope
    source_version: int | None = None  # the version the Redis it reads held at its last read
    host: str | None = None
    region: str | None = None  # its --region
    workers: int | None = None  # of the supervisor whose port it shares
    worker: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvoyStatus(_Entry):
    """One Envoy node, written by the replica holding its stream (or refusing it)."""
    WIRE: ClassVar[dict[str, str]] = {"transport": "kind"}
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"refused"})
    node: str = ""
    replica: str = ""
    region: str | None = None
    transport: str | None = None  # "sotw" or "delta"
    acked: dict = field(default_factory=dict)  # short type (cds, lds, fcds) -> version_info
    last_nack: dict | None = None  # {type, version, detail, at}
    connected_since: float | None = None
    heartbeat: float | None = None
    refused: dict | None = None  # {detail, at}: the replica will not serve this node as it asks


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscovererStatus(_Entry):
    """One discoverer, leader or standby."""
    STAMP: ClassVar[str] = "updated_at"
    role: str = STANDBY
    epoch: int | None = None  # while leading
    version: int | None = None  # of the set it last wrote, while leading
    builders: int | None = None
    last_poll_at: float | None = None
    last_error: str | None = None
    pid: int | None = None
    updated_at: float | None = None


def read(entries: dict[str, Any], record: type) -> dict[str, Any]:
    """A status hash's entries as records."""
    return {k: record.from_json(v) for k, v in entries.items()}


def fresh(entries: dict[str, Any], record: type, now: float) -> dict[str, Any]:
    """The hash's live entries as records, sorted by key."""
    return {k: r for k, r in sorted(read(entries, record).items()) if not r.stale(now)}
