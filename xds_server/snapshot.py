"""What transports send: immutable snapshots of one resource type, and the deltas between them.

Also the one contract between the transports and the cache (``SnapshotSource``),
in the spirit of go-control-plane's ``ConfigWatcher``: a transport asks for
the current snapshot of its view, a delta between two snapshots, and to be
woken on a new version; it knows nothing else about the cache (no renderer,
no routing mode, no builder records, no Redis).

Response bodies are built once per snapshot (or per pair of snapshots) and
shared by every stream; a stream adds only its nonce (protobuf fields
concatenate, see ``wire``).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Mapping, Protocol

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
    label: str = ""  # appended to version_info (transitional snapshots)
    seq: int = 0  # the cache update that made it: orders snapshots even when Redis versions restart
    _sotw: bytes | None = field(default=None, repr=False)

    @property
    def version_info(self) -> str:
        return f"{self.version}{self.label}"

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


def with_nonce(body: bytes, nonce: str) -> bytes:
    """A response body (SotW or delta) completed with a stream's nonce."""
    return body + wire.field_str(F_NONCE, nonce)


@dataclass(frozen=True, slots=True)
class Delta:
    """What turns one snapshot into another, as a DeltaDiscoveryResponse body."""

    updated: tuple[Rendered, ...]
    removed: tuple[str, ...]
    body: bytes

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

    def snapshot(self, view: Hashable, type_url: str) -> TypeSnapshot:
        """The current snapshot of ``type_url`` for ``view``; the same object until it changes."""

    def delta(self, view: Hashable, old: TypeSnapshot, new: TypeSnapshot) -> Delta:
        """old -> new, built once and shared by every wildcard stream of the view."""

    def may_appear(self, type_url: str, name: str) -> bool:
        """An unknown name that a builder may still take (on-demand CDS): wait before saying removed."""

    def ack_latency(self, version: int) -> float:
        """Seconds from ``version`` entering Redis to now."""

    def watch(self, event: asyncio.Event) -> None:
        """Set ``event`` on every new version (until ``unwatch``)."""

    def unwatch(self, event: asyncio.Event) -> None:
        ...
