"""Who is connected: one ``Peer`` per stream.

The registry is in-memory; ``xds_server.status`` publishes it to Redis. Which
view a node sees is the cache's business (``SnapshotSource.open_view``).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable

from envoy.config.core.v3 import base_pb2

from shared import resources as rs
from shared.errors import StreamRefused
from shared.status import EnvoyStatus

from . import metrics
from .nodes import node_region, node_routing
from .snapshot import SnapshotSource

log = logging.getLogger(__name__)
REFUSED_KEEP = 60.0  # seconds a refused node stays in {xds}:envoys after its last refused stream


@dataclass(eq=False)
class Peer:
    node_id: str
    region: str | None
    view: Hashable  # the cache's, from open_view
    transport: str  # "sotw" or "delta"
    connected_since: float = field(default_factory=time.time)
    acked: dict[str, str] = field(default_factory=dict)  # short type -> version_info
    last_nack: dict | None = None
    dirty: bool = True
    notify: Callable[[], None] | None = field(default=None, repr=False)  # an ACK or NACK to publish
    handled: int = 0  # requests of the stream handled (what each made due is queued by then)
    queued: int = 0  # responses the stream queued for its writer

    def ack(self, type_url: str, version: str) -> None:
        self.acked[rs.SHORT.get(type_url, type_url)] = version
        self._changed()

    def nack(self, type_url: str, version: str, detail: str) -> None:
        self.last_nack = {"type": rs.SHORT.get(type_url, type_url), "version": version,
                          "detail": detail[:500], "at": round(time.time(), 3)}
        self._changed()

    def _changed(self) -> None:
        self.dirty = True
        if self.notify is not None:
            self.notify()

    def status(self, replica: str) -> EnvoyStatus:
        return EnvoyStatus(node=self.node_id, replica=replica, region=self.region, transport=self.transport,
                           acked=self.acked, last_nack=self.last_nack,
                           connected_since=round(self.connected_since, 3), heartbeat=round(time.time(), 3))


class Registry:
    """Connected peers; each holds its view open in the cache while it is connected."""

    def __init__(self, cache: SnapshotSource):
        self.cache = cache
        self.peers: set[Peer] = set()
        self.gone: set[str] = set()
        self.changed = asyncio.Event()  # set when a peer ACKs or NACKs: the status publisher writes it soon
        # nodes whose streams this replica refuses for their configuration (not for load): shown in
        # {xds}:envoys with a "refused" field while they keep retrying (``refused_status``)
        self.refused: dict[str, dict] = {}
        self.refused_dirty = False
        self._nodes: collections.Counter[str] = collections.Counter()

    def join(self, node: base_pb2.Node, transport: str, identities: frozenset[str] | None = None, *,
             incremental: bool = True) -> Peer:
        """Register a stream's node; raises StreamRefused for a node it may not be, a view too many, or
        state-of-the-world xDS from a replica whose resources only delta xDS can carry (FCDS)."""
        node_id = node.id or "unknown"
        if identities is not None and node_id not in identities:
            raise StreamRefused("PERMISSION_DENIED", f"node id {node_id!r} is not in the client certificate "
                                                     f"({', '.join(sorted(identities)) or 'no names'})")
        region = node_region(node)
        if not incremental and self.cache.delta_only:
            raise self._refuse(node_id, region, transport, (
                f"node {node_id!r} asked for state-of-the-world xDS, but this replica serves filter chains "
                "over FCDS, which needs delta ADS (xdsctl bootstrap --routing filter_chains --fcds); "
                "refusing the stream, the node gets no routes from this replica until it uses delta"))
        self._check_routing(node, node_id, region, transport)
        self.refused.pop(node_id, None)
        view = self.cache.open_view(node)
        peer = Peer(node_id, region, view, transport, notify=self.changed.set)
        self.peers.add(peer)
        self._nodes[node_id] += 1
        self.gone.discard(node_id)
        return peer

    def _check_routing(self, node: base_pb2.Node, node_id: str, region: str | None, transport: str) -> None:
        """Refuse a node whose bootstrap asks for another routing than this replica serves: its Envoy
        would get resources it cannot route with (a node without the metadata is served as it is)."""
        asked, served = node_routing(node), self.cache.routing
        if asked is None or asked == served:
            return
        metrics.ROUTING_MISMATCHES.inc()
        raise self._refuse(node_id, region, transport, (
            f"node {node_id!r} has a bootstrap for routing {asked!r}, but this replica serves {served!r}; "
            f"refusing the stream, the node gets no routes from this replica until its bootstrap and the "
            f"replica agree (xdsctl bootstrap --routing, xds-server --routing and --fcds)"))

    def _refuse(self, node_id: str, region: str | None, transport: str, detail: str) -> StreamRefused:
        if node_id not in self._nodes:  # a node connected otherwise keeps its own status
            self.refused[node_id] = {"region": region, "transport": transport, "detail": detail[:500],
                                     "at": round(time.time(), 3)}
            self.refused_dirty = True
            self.changed.set()  # published soon, like an ACK
        return StreamRefused("FAILED_PRECONDITION", detail)

    def refused_status(self, replica: str, now: float) -> dict[str, EnvoyStatus]:
        """{xds}:envoys entries of the refused nodes; one not seen for REFUSED_KEEP seconds is gone."""
        for node_id in [n for n, r in self.refused.items() if now - r["at"] > REFUSED_KEEP]:
            del self.refused[node_id]
            self.gone.add(node_id)
        self.refused_dirty = False
        return {n: EnvoyStatus(node=n, replica=replica, region=r["region"], transport=r["transport"],
                               refused={"detail": r["detail"], "at": r["at"]}, connected_since=r["at"],
                               heartbeat=round(now, 3)) for n, r in self.refused.items()}

    def leave(self, peer: Peer) -> None:
        if peer not in self.peers:
            return
        self.peers.discard(peer)
        self._nodes[peer.node_id] -= 1
        if self._nodes[peer.node_id] <= 0:
            del self._nodes[peer.node_id]
            self.gone.add(peer.node_id)
        self.cache.close_view(peer.view)
