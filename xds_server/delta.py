"""Incremental (delta) xDS: ADS and the per-type CDS/LDS services.

Wildcard subscribers share one precomputed delta per (view, old, new); an
explicit subscriber (on-demand CDS) costs what it subscribes to. A name under
the builder domain that does not exist yet is held until the builder appears
or ``wait`` runs out, and only then reported removed; other unknown names are
reported removed at once.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from shared import resources as rs

from . import metrics
from .snapshot import Delta, TypeSnapshot, with_nonce
from .stream import Stream

log = logging.getLogger(__name__)
MAX_NAMES = 10_000  # explicit subscriptions per type per stream


@dataclass(eq=False)
class DeltaState:
    type_url: str
    wildcard: bool = False
    names: set[str] = field(default_factory=set)  # explicit subscriptions
    base: TypeSnapshot | None = None  # wildcard: the snapshot the Envoy was brought to
    initial: dict[str, str] = field(default_factory=dict)  # initial_resource_versions
    known: dict[str, str] = field(default_factory=dict)  # explicit names -> version sent
    dirty: set[str] = field(default_factory=set)  # explicit names owed an answer
    checked: TypeSnapshot | None = None  # snapshot the explicit names were last checked against
    waiting: dict[str, float] = field(default_factory=dict)  # on-demand name -> deadline
    held: set[str] = field(default_factory=set)  # removals held back (make before break)
    nonce: str | None = None
    sent_version: str = ""
    sent_number: int = 0  # the set version of sent_version

    def idle(self, target: TypeSnapshot) -> bool:
        """Nothing can be due for ``target``: the common case after an ACK (checked without building anything)."""
        if self.held or self.dirty or self.waiting:
            return False
        if self.wildcard and self.base is not target:
            return False
        return not ((not self.wildcard or self.names) and self.checked is not target)


class DeltaStream(Stream):
    kind = "delta"

    def __init__(self, *args, ordered: bool = True, wait: float = 5.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.ordered = ordered
        self.wait = wait
        self.states: dict[str, DeltaState] = {}

    def node_of(self, request: discovery_pb2.DeltaDiscoveryRequest):
        return request.node

    def on_request(self, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        type_url = req.type_url
        if not self.accepts(type_url):
            return
        subscribe, unsubscribe = req.resource_names_subscribe, req.resource_names_unsubscribe
        st = self.states.get(type_url)
        if st is None:
            st = self.states[type_url] = DeltaState(type_url)
            st.initial = dict(req.initial_resource_versions)
            if not subscribe:
                st.wildcard = True  # legacy wildcard: a first request naming nothing
        if subscribe or unsubscribe:  # an ACK names none: not even an empty loop over them
            self._subscribe(st, subscribe, unsubscribe)
        nonce = req.response_nonce
        if nonce and nonce == st.nonce:
            self._answer(st, req)

    def _subscribe(self, st: DeltaState, subscribe, unsubscribe) -> None:
        for name in subscribe:
            if name == "*":
                st.wildcard = True
            elif len(st.names) < MAX_NAMES:
                st.names.add(name)
                st.dirty.add(name)
            else:
                metrics.BAD_REQUESTS.labels("too_many_names").inc()
                self.log_once.warning(f"names:{self.peer.node_id}", "%s subscribes to over %d names; ignoring more",
                                      self.peer.node_id, MAX_NAMES)
                break
        for name in unsubscribe:
            if name == "*":
                st.wildcard = False
                st.base = None
            st.names.discard(name)
            st.known.pop(name, None)
            st.dirty.discard(name)
            st.waiting.pop(name, None)

    def _answer(self, st: DeltaState, req) -> None:
        st.nonce = None
        if req.HasField("error_detail"):
            metrics.count_nack(st.type_url)
            self.peer.nack(st.type_url, st.sent_version, req.error_detail.message)
            log.warning("NACK from %s for %s version %s: %s; not resending it",
                        self.peer.node_id, rs.SHORT[st.type_url], st.sent_version, req.error_detail.message[:300])
            return
        metrics.count_ack(st.type_url, self.cache.ack_latency(st.sent_number))
        self.peer.ack(st.type_url, st.sent_version)

    # --- responses ------------------------------------------------------------
    def tick(self) -> float | None:
        # a type with a response in flight is handled again at its ACK; counting its
        # deadlines would fire the timer (at 0 s) over and over until that ACK arrives
        deadline = None
        for st in self.states.values():
            if st.waiting and st.nonce is None:
                first = min(st.waiting.values())
                deadline = first if deadline is None else min(deadline, first)
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def responses(self):
        for type_url in (rs.CLUSTER, rs.LISTENER):
            st = self.states.get(type_url)
            if st is None or st.nonce is not None:
                continue
            target = self.cache.snapshot(self.peer.view, type_url)
            if st.idle(target) or not self._may_send(st, target):
                continue
            out = self._shared(st, target) or self._own(st, target)
            if out is None:
                continue
            st.nonce, message = out
            st.sent_version, st.sent_number = target.version_info, target.version
            yield type_url, message

    def _may_send(self, st: DeltaState, target: TypeSnapshot) -> bool:
        """Make before break: a listener only after the clusters it uses are ACKed."""
        if not (self.ordered and self.cache.make_before_break and st.type_url == rs.LISTENER):
            return True
        cds = self.states.get(rs.CLUSTER)
        if cds is None or not cds.wildcard:
            return True
        return cds.nonce is None and cds.base is not None and target.uses.issubset(cds.base.resources.keys())

    def _shared(self, st: DeltaState, target: TypeSnapshot) -> tuple[str, bytes] | None:
        """The message every wildcard stream of the view gets alike, when this one gets just that."""
        if not st.wildcard or st.names or st.held:
            return None
        if st.base is None:
            if st.initial:
                return None  # the Envoy has some of them already (a reconnect): its own answer
            st.base = target
            return target.delta_message()
        delta = self.cache.delta(self.peer.view, st.base, target)
        if delta.removed and self._may_hold(st):
            return None
        st.base = target
        return delta.message() if delta else None

    def _may_hold(self, st: DeltaState) -> bool:
        return (self.ordered and st.type_url == rs.CLUSTER and self.cache.make_before_break
                and rs.LISTENER in self.states)

    def _own(self, st: DeltaState, target: TypeSnapshot) -> tuple[str, bytes] | None:
        """A response for this stream alone (explicit names, held removals, a reconnect), with its own nonce."""
        body = self._body(st, target)
        if body is None:
            return None
        nonce = self.nonce()
        return nonce, with_nonce(body, nonce)

    def _body(self, st: DeltaState, target: TypeSnapshot) -> bytes | None:
        updated, removed = [], []
        shared = None
        first = st.wildcard and st.base is None  # answered even when empty: Envoy waits for it to initialize
        if st.wildcard and st.base is not target:
            if st.base is None:
                res = target.resources
                updated = [res[n] for n in sorted(res) if st.initial.get(n) != res[n].version]
                removed = [n for n in st.initial if n not in target.resources]
                st.initial = {}
            else:
                shared = self.cache.delta(self.peer.view, st.base, target)
                updated, removed = list(shared.updated), list(shared.removed)
            st.base = target
        if st.held:
            removed.extend(n for n in st.held if n not in target.resources)
            st.held.clear()
        if not st.wildcard or st.names:
            more_updated, more_removed = self._explicit(st, target)
            updated += more_updated
            removed += more_removed
            shared = None if (more_updated or more_removed) else shared
        removed = sorted(set(self._hold_removals(st, removed)))
        if not updated and not removed and not first:
            return None
        if shared is not None and tuple(removed) == shared.removed:
            return shared.body
        # in name order (the same bytes from every replica); a name both explicit and wildcard goes once
        updated = sorted({r.name: r for r in updated}.values(), key=lambda r: r.name)
        return Delta.build(st.type_url, target.version, updated, removed).body

    def _explicit(self, st: DeltaState, target: TypeSnapshot):
        now = time.monotonic()
        check = st.names if st.checked is not target else st.dirty | set(st.waiting)
        st.checked = target
        updated, removed = [], []
        for name in check:
            r = target.resources.get(name)
            if r is not None:
                st.waiting.pop(name, None)
                if st.known.get(name) != r.version:
                    st.known[name] = r.version
                    updated.append(r)
            elif name in st.known:
                del st.known[name]
                removed.append(name)
            elif name in st.dirty or name in st.waiting:
                if self.cache.may_appear(st.type_url, name) and st.waiting.setdefault(name, now + self.wait) > now:
                    continue
                st.waiting.pop(name, None)
                removed.append(name)  # report the unknown name as removed
        st.dirty.clear()
        return updated, removed

    def _hold_removals(self, st: DeltaState, removed: list[str]) -> list[str]:
        """Clusters still used by the listener the Envoy has are removed after that listener is replaced."""
        if not (removed and self.ordered and st.type_url == rs.CLUSTER and self.cache.make_before_break):
            return removed
        lds = self.states.get(rs.LISTENER)
        if lds is None:
            return removed
        if lds.nonce is not None:  # a listener is in flight: the old one may still use any of them
            st.held.update(removed)
            return []
        in_use = lds.base.uses if lds.base is not None else frozenset()
        keep = [n for n in removed if n in in_use]
        st.held.update(keep)
        return [n for n in removed if n not in in_use]
