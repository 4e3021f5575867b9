"""What transports send: immutable snapshots of one resource type, and the deltas between them.

Also the one contract between the transports and the cache (``SnapshotSource``),
in the spirit of go-control-plane's ``ConfigWatcher``: a transport asks which view its node sees,
the current snapshot of that view, a delta between two snapshots, and to be
woken on a new version; it knows nothing else about the cache (no renderer,
no routing mode, no builder records, no Redis).

Response bodies are built once per snapshot (or per pair of snapshots) and
shared by every stream. A response that every stream of a view gets alike
(the SotW snapshot, the delta between two snapshots, the first full delta)
is even one message, nonce included: its nonce is unique in the process
("s12", "d7"), so it is unique on every stream that gets it, and the same
bytes object goes to every stream. A response built for one stream (explicit
names, a held removal) gets a nonce of that stream's own ("1", "2", ...:
never one of the shared ones) appended to its body (protobuf fields
concatenate, see ``wire``).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Mapping, Protocol

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from shared import resources as rs

from . import wire
from .render import Rendered

# DiscoveryResponse / DeltaDiscoveryResponse field numbers the bodies are built from
F_VERSION_INFO, F_TYPE_URL, F_NONCE, F_REMOVED = 1, 4, 5, 6


@dataclass(eq=False)
class TypeSnapshot:
    """All resources of one type for one view, at one version of the set."""

    type_url: str
    version: int
    resources: Mapping[str, Rendered]
    uses: frozenset[str] = frozenset()  # names of resources of cache.depends_on(type_url) these route to
    label: str = ""  # of a transitional snapshot (rs.BRIDGE), in its version_info
    seq: int = 0  # the cache update that made it: orders snapshots even when Redis versions restart
    _sotw: bytes | None = field(default=None, repr=False)
    _sotw_message: tuple[str, bytes] | None = field(default=None, repr=False)
    _delta_message: tuple[str, bytes] | None = field(default=None, repr=False)
    _versions: dict[str, str] | None = field(default=None, repr=False)
    _held_message: tuple[str, bytes] | None = field(default=None, repr=False)
    _held_key: bytes | None = field(default=None, repr=False)

    @property
    def version_info(self) -> str:
        return rs.version_info(self.version, self.label)

    def sotw_body(self) -> bytes:
        """DiscoveryResponse without its nonce; built once, shared by every stream.

        Resources go in name order: a replica that followed every change and one
        that loaded the set whole send the same bytes.
        """
        if self._sotw is None:
            res = self.resources
            self._sotw = (
                wire.field_str(F_VERSION_INFO, self.version_info)
                + b"".join(res[n].sotw_field for n in sorted(res))
                + wire.field_str(F_TYPE_URL, self.type_url)
            )
        return self._sotw

    def sotw_message(self) -> tuple[str, bytes]:
        """(nonce, the whole DiscoveryResponse): one message for every wildcard stream."""
        if self._sotw_message is None:
            self._sotw_message = shared_message(self.sotw_body(), "s")
        return self._sotw_message

    def delta_message(self) -> tuple[str, bytes]:
        """(nonce, a DeltaDiscoveryResponse of every resource): the first answer to a wildcard
        stream that has nothing yet, one message for all of them."""
        if self._delta_message is None:
            res = self.resources
            body = Delta.build(self.type_url, self.version, [res[n] for n in sorted(res)], ()).body
            self._delta_message = shared_message(body, "d")
        return self._delta_message


    def versions(self) -> dict[str, str]:
        """name -> version of every resource, built once: a reconnecting Envoy's
        ``initial_resource_versions`` is compared with it whole (one dict comparison, in C)."""
        if self._versions is None:
            self._versions = {n: r.version for n, r in self.resources.items()}
        return self._versions

    def held_key(self) -> bytes:
        """What an Envoy that holds exactly this snapshot sends on reconnecting, spelled as ``held_key``
        spells its first request: compared as bytes (memcmp), not resource by resource."""
        if self._held_key is None:
            request = discovery_pb2.DeltaDiscoveryRequest(type_url=self.type_url,
                                                          initial_resource_versions=self.versions())
            self._held_key = request.SerializeToString(deterministic=True)
        return self._held_key

    def held_message(self) -> tuple[str, bytes]:
        """(nonce, a DeltaDiscoveryResponse with no resources): the first answer to a wildcard stream
        that holds this snapshot already (a reconnect), one message for all of them."""
        if self._held_message is None:
            self._held_message = shared_message(Delta.build(self.type_url, self.version, (), ()).body, "d")
        return self._held_message


def held_key(request: discovery_pb2.DeltaDiscoveryRequest) -> bytes:
    """A first delta request's type and ``initial_resource_versions``, canonical (keys sorted, by
    protobuf's deterministic serialization, in C): equal to ``TypeSnapshot.held_key`` of the snapshot
    whose resources have exactly those versions. Empties the request's other fields (node, names):
    call it last."""
    for desc, _ in request.ListFields():
        if desc.name not in ("type_url", "initial_resource_versions"):
            request.ClearField(desc.name)
    return request.SerializeToString(deterministic=True)


_shared_nonces = itertools.count(1)


def shared_message(body: bytes, prefix: str) -> tuple[str, bytes]:
    """A body completed with a nonce unique in this process (a letter, then a number)."""
    nonce = f"{prefix}{next(_shared_nonces)}"
    return nonce, with_nonce(body, nonce)


def with_nonce(body: bytes, nonce: str) -> bytes:
    """A response body (SotW or delta) completed with a nonce."""
    return body + wire.field_str(F_NONCE, nonce)


@dataclass(eq=False, slots=True)
class Delta:
    """What turns one snapshot into another, as a DeltaDiscoveryResponse body."""

    updated: tuple[Rendered, ...]
    removed: tuple[str, ...]
    body: bytes
    _message: tuple[str, bytes] | None = None

    @classmethod
    def build(cls, type_url: str, version: int, updated: Iterable[Rendered], removed: Iterable[str]) -> "Delta":
        updated, removed = tuple(updated), tuple(removed)
        body = (
            wire.field_str(F_VERSION_INFO, str(version))
            + b"".join(r.delta_field for r in updated)
            + wire.field_str(F_TYPE_URL, type_url)
            + b"".join(wire.field_str(F_REMOVED, n) for n in removed)
        )
        return cls(updated, removed, body)

    def message(self) -> tuple[str, bytes]:
        """(nonce, the whole response): one message for every stream that gets this delta."""
        if self._message is None:
            self._message = shared_message(self.body, "d")
        return self._message

    def __bool__(self) -> bool:
        return bool(self.updated or self.removed)


class SnapshotSource(Protocol):
    """Everything a transport may ask of the cache (``xds_server.cache.Cache`` implements it)."""

    @property
    def ready(self) -> bool:
        """False until the first full load: a transport sends nothing before."""

    @property
    def types(self) -> tuple[str, ...]:
        """The type URLs served, in make-before-break order: a type comes before every type that
        names its resources (CLUSTER, LISTENER; with FCDS CLUSTER, FILTER_CHAIN, LISTENER).
        A stream asks for them in this order; other types are not served."""

    def depends_on(self, type_url: str) -> str | None:
        """The type whose resources ``type_url``'s resources name (a snapshot's ``uses``), or None.

        Make before break, for every such pair: a snapshot goes out only after what it uses is at the
        Envoy (ACKed), or, for a type the Envoy asks for by name once it has the snapshot (FCDS
        chains), can be sent the moment it asks; and a resource is removed only after nothing the
        Envoy has of the dependent type uses it."""

    @property
    def delta_only(self) -> bool:
        """The resources can only be served over delta xDS (FCDS): state-of-the-world streams are refused."""

    @property
    def routing(self) -> str:
        """The routing the resources are for (``rs.routing_name``): a node whose bootstrap asks for another
        is refused."""

    def open_view(self, node: base_pb2.Node) -> Hashable:
        """The view ``node`` sees (go-control-plane's NodeHash: nodes with equal views share every
        snapshot and delta), held open until ``close_view``. Raises ``StreamRefused`` when the node
        may not have one (a view too many)."""

    def close_view(self, view: Hashable) -> None:
        """A stream that opened ``view`` is gone; a view no stream holds may be forgotten."""

    def snapshot(self, view: Hashable, type_url: str) -> TypeSnapshot:
        """The current snapshot of ``type_url`` for ``view``; the same object until it changes."""

    def delta(self, view: Hashable, old: TypeSnapshot, new: TypeSnapshot) -> Delta:
        """old -> new, built once and shared by every wildcard stream of the view."""

    def matching(self, view: Hashable, type_url: str, held: bytes) -> TypeSnapshot | None:
        """The current snapshot, or one of the few published before it, that a reconnecting Envoy holds
        exactly (``held``: its ``initial_resource_versions`` as ``held_key`` spells them), else None.
        A stream that holds one of them is brought to the current one by the shared delta."""

    def may_appear(self, type_url: str, name: str) -> bool:
        """An unknown name that a builder may still take (on-demand CDS): wait before saying removed."""

    def ack_latency(self, version: int) -> float:
        """Seconds from ``version`` entering Redis to now."""

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every new version (until ``unwatch``), synchronously, in the
        writer's task, once per version for all streams: it must be cheap and must not raise.
        A transport uses it to queue what the new version owes its Envoy and to wake its writer;
        a stream that has a response in flight queues nothing and is not woken."""

    def unwatch(self, callback: Callable[[], None]) -> None:
        ...
