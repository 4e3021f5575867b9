"""State-of-the-world xDS (ADS and the per-type CDS/LDS services).

Per type: one response in flight; a newer version waiting while the Envoy
has not answered is coalesced into the newest; a NACKed snapshot is not
resent. On ADS, make before break: a listener goes out only when the
clusters it uses are ACKed, and clusters go away only when the listener
that used them is gone (a transitional union of clusters bridges a change
that both adds and removes). The rule is over the cache's ordered types and
their ``depends_on`` pairs, as in delta; FCDS (three types) is delta only, so
a state-of-the-world stream sees at most one such pair.
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass

from envoy.service.discovery.v3 import discovery_pb2

from shared import resources as rs

from . import metrics
from .snapshot import TypeSnapshot, with_nonce
from .stream import Stream

log = logging.getLogger(__name__)


@dataclass(eq=False)
class TypeState:
    type_url: str
    names: frozenset[str] | None = None  # None: wildcard
    sent: TypeSnapshot | None = None
    nonce: str | None = None  # of the response in flight
    last_nonce: str | None = None  # of the latest response sent; any other is stale
    resend: bool = False  # the subscription changed: send again even without a new version
    acked: TypeSnapshot | None = None
    nacked: TypeSnapshot | None = None

    @property
    def pending(self) -> bool:
        return self.nonce is not None


class SotwStream(Stream):
    transport = "sotw"

    def __init__(self, *args, ordered: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.ordered = ordered  # ADS: coordinate CDS and LDS
        self.states: dict[str, TypeState] = {}

    def node_of(self, request: discovery_pb2.DiscoveryRequest):
        return request.node

    def on_request(self, req: discovery_pb2.DiscoveryRequest) -> None:
        if not self.accepts(req.type_url):
            return
        st = self.states.get(req.type_url)
        if st is None:
            st = self.states[req.type_url] = TypeState(req.type_url)
        # "*" among names is wildcard plus those names: everything (xDS wildcard semantics)
        requested = req.resource_names
        names = None if not requested or "*" in requested else frozenset(requested)
        if not req.response_nonce:
            st.names = names
            self._initial(st, req)
            return
        if req.response_nonce != st.last_nonce:
            return  # stale: answers a response that was superseded; ignored whole
        if names != st.names:
            st.names, st.resend = names, True  # a new subscription rides on the last nonce
        if st.nonce is not None:
            self._answer(st, req)

    def _answer(self, st: TypeState, req: discovery_pb2.DiscoveryRequest) -> None:
        sent, st.nonce = st.sent, None
        if req.HasField("error_detail"):
            st.nacked = sent
            metrics.count_nack(st.type_url)
            self.peer.nack(st.type_url, sent.version_info, req.error_detail.message)
            log.warning("NACK from %s for %s version %s: %s; not resending it",
                        self.peer.node_id, rs.SHORT.get(st.type_url, st.type_url), sent.version_info,
                        req.error_detail.message[:300])
        else:
            st.acked = sent
            metrics.count_ack(st.type_url, self.cache.ack_latency(sent.version))
            self.peer.ack(st.type_url, sent.version_info)

    def _initial(self, st: TypeState, req: discovery_pb2.DiscoveryRequest) -> None:
        """A first request (or a re-request): reset; skip a resend of what the Envoy already has."""
        st.nonce = None
        st.sent = st.acked = None
        if req.version_info and self.cache.ready and st.names is None:
            current = self.cache.snapshot(self.peer.view, st.type_url)
            if current.version_info == req.version_info:
                st.sent = st.acked = current
                self.peer.ack(st.type_url, current.version_info)

    def responses(self):
        for type_url in self.cache.types:  # in make-before-break order
            st = self.states.get(type_url)
            if st is None or st.pending:
                continue
            snap = self._next(st)
            if snap is None or (not st.resend and (snap is st.sent or snap is st.nacked)):
                continue
            st.sent = snap
            st.nonce, message = self._message(st, snap)
            st.last_nonce, st.resend = st.nonce, False
            yield type_url, message

    def _message(self, st: TypeState, snap: TypeSnapshot) -> tuple[str, bytes]:
        """(nonce, response): wildcard streams share one message per snapshot; named ones get their own."""
        if st.names is None:
            return snap.sotw_message()
        nonce = self.nonce()
        body = TypeSnapshot(snap.type_url, snap.version,
                            {n: r for n, r in snap.resources.items() if n in st.names}).sotw_body()
        return nonce, with_nonce(body, nonce)

    def _next(self, st: TypeState) -> TypeSnapshot | None:
        target = self.cache.snapshot(self.peer.view, st.type_url)
        if not self.ordered:
            return target
        dst = self.states.get(self.cache.depends_on(st.type_url))
        if dst is not None and (dst.pending or not self._has_clusters(dst.acked, target)):
            return None  # what it names first
        ust = self.states.get(self._dependent(st.type_url))
        if ust is None:
            return target
        # what the Envoy has of the dependent type, and what is in flight that it may be applying right now
        in_use = [snap for snap in (ust.acked, ust.sent if ust.pending else None) if snap is not None]
        if all(self._has_clusters(target, snap) for snap in in_use):
            return target
        if ust.pending:
            return None  # the dependent is being replaced; remove after
        if st.acked is not None and self._has_clusters(st.acked, self.cache.snapshot(self.peer.view, ust.type_url)):
            return None  # the new dependent can go out first
        return bridge(st.acked or target, target)

    @staticmethod
    def _has_clusters(clusters: TypeSnapshot | None, listener: TypeSnapshot) -> bool:
        """Does the Envoy's set of one type (clusters) cover every name the dependent snapshot (the
        listener) uses?"""
        if clusters is None:
            return not listener.uses
        return listener.uses.issubset(clusters.resources.keys())


_BRIDGES: collections.OrderedDict[tuple[int, int], tuple] = collections.OrderedDict()


def bridge(have: TypeSnapshot, target: TypeSnapshot) -> TypeSnapshot:
    """Clusters of both: bridges a change that adds and removes (make before break).

    One per (have, target) pair, shared by every stream that needs it; the memo
    holds both snapshots, which keeps their ids unique while it is in use."""
    key = (id(have), id(target))
    hit = _BRIDGES.get(key)
    if hit is None:
        snap = TypeSnapshot(target.type_url, target.version, {**have.resources, **target.resources},
                            label=rs.BRIDGE, seq=target.seq)
        hit = _BRIDGES[key] = (have, target, snap)
        while len(_BRIDGES) > 64:
            _BRIDGES.popitem(last=False)
    return hit[2]
