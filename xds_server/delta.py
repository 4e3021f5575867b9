"""Incremental (delta) xDS: ADS and the per-type CDS/LDS services.

Wildcard subscribers share one precomputed delta per (view, old, new); an
explicit subscriber (on-demand CDS, FCDS chains) costs what it subscribes to.
A name under the builder domain that does not exist yet is held until the
builder appears or ``wait`` runs out (on-demand CDS), and only then reported
removed; other unknown names are reported removed at once.

Make before break is one rule over the cache's ordered types and their
``depends_on`` pairs (CLUSTER <- LISTENER, or CLUSTER <- FILTER_CHAIN <-
LISTENER with FCDS): a snapshot goes out once what it uses is usable by the
Envoy (``_may_send``), and a removal waits until nothing the Envoy has of the
dependent type uses the name (``_hold_removals``).
"""
from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from shared import resources as rs

from . import metrics
from .render import Rendered
from .snapshot import Delta, TypeSnapshot, held_key, with_nonce
from .stream import Stream

log = logging.getLogger(__name__)
MAX_NAMES = 10_000  # explicit subscriptions per type per stream


@dataclass(eq=False)
class DeltaState:
    type_url: str
    wildcard: bool = False
    names: set[str] = field(default_factory=set)  # explicit subscriptions
    base: TypeSnapshot | None = None  # wildcard: the snapshot the Envoy was brought to
    initial: dict[str, str] = field(default_factory=dict)  # initial_resource_versions (see initial_versions)
    held_key: bytes = b""  # the same, canonical (snapshot.held_key): a reconnect is matched by it
    _initial: object = None  # the request's map, made a dict only when a reconnect is answered alone
    holding: TypeSnapshot | None = None  # a reconnect: the snapshot the Envoy told us it has, until its ACK
    known: dict[str, Rendered] = field(default_factory=dict)  # explicit names -> what the Envoy was sent
    dirty: set[str] = field(default_factory=set)  # explicit names owed an answer
    checked: TypeSnapshot | None = None  # snapshot the explicit names were last checked against
    waiting: dict[str, float] = field(default_factory=dict)  # on-demand name -> deadline
    held: set[str] = field(default_factory=set)  # removals held back (make before break)
    nonce: str | None = None
    sent_version: str = ""
    sent_number: int = 0  # the set version of sent_version
    using: collections.Counter = field(default_factory=collections.Counter)  # uses of the known resources

    def initial_versions(self) -> dict[str, str]:
        """initial_resource_versions as a dict (converting a protobuf map costs a Python step per name)."""
        if self._initial is not None:
            self.initial, self._initial = dict(self._initial), None
        return self.initial

    def idle(self, target: TypeSnapshot) -> bool:
        """Nothing can be due for ``target``: the common case after an ACK (checked without building anything)."""
        if self.held or self.dirty or self.waiting:
            return False
        if self.wildcard and self.base is not target:
            return False
        return not ((not self.wildcard or self.names) and self.checked is not target)

    def know(self, name: str, r: Rendered) -> None:
        self.forget(name)
        self.known[name] = r
        self.using.update(r.uses)

    def forget(self, name: str) -> None:
        old = self.known.pop(name, None)
        for use in old.uses if old is not None else ():
            if self.using[use] > 1:
                self.using[use] -= 1
            else:
                del self.using[use]

    def uses_name(self, name: str) -> bool:
        """Does something the Envoy has of this type name ``name`` (the wildcard snapshot, or a named one)?"""
        return name in self.using or (self.wildcard and self.base is not None and name in self.base.uses)


class DeltaStream(Stream):
    transport = "delta"
    incremental = True

    def __init__(self, *args, ordered: bool = True, wait: float = 5.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.ordered = ordered
        self.wait = wait
        self.states: dict[str, DeltaState] = {}
        self._cover: dict[int, tuple] = {}  # id(uses) -> (uses, snapshot, covered): see _covers

    def node_of(self, request: discovery_pb2.DeltaDiscoveryRequest):
        return request.node

    def on_request(self, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        type_url = req.type_url
        if not self.accepts(type_url):
            return
        subscribe, unsubscribe = req.resource_names_subscribe, req.resource_names_unsubscribe
        st = known = self.states.get(type_url)
        if st is None:
            st = self.states[type_url] = DeltaState(type_url)
            if not subscribe:
                st.wildcard = True  # legacy wildcard: a first request naming nothing
        if subscribe or unsubscribe:  # an ACK names none: not even an empty loop over them
            self._subscribe(st, subscribe, unsubscribe)
        nonce = req.response_nonce
        if nonce and nonce == st.nonce:
            self._answer(st, req)
        if known is None and req.initial_resource_versions:  # a reconnect: what the Envoy holds
            st._initial = req.initial_resource_versions
            st.held_key = held_key(req)  # last: it empties the request's other fields

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
            st.forget(name)
            st.dirty.discard(name)
            st.waiting.pop(name, None)
            st.held.discard(name)  # the Envoy let go of it itself

    def _answer(self, st: DeltaState, req) -> None:
        st.nonce, st.holding = None, None
        if req.HasField("error_detail"):
            metrics.count_nack(st.type_url)
            self.peer.nack(st.type_url, st.sent_version, req.error_detail.message)
            log.warning("NACK from %s for %s version %s: %s; not resending it",
                        self.peer.node_id, rs.SHORT.get(st.type_url, st.type_url), st.sent_version,
                        req.error_detail.message[:300])
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
        for type_url in self.cache.types:  # in make-before-break order
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
        """Make before break: a snapshot goes out only when what it uses is usable by the Envoy."""
        return not self.ordered or self._usable(st.type_url, target.uses)

    def _usable(self, type_url: str, uses: frozenset[str]) -> bool:
        """Can the Envoy use ``uses`` (names of the type ``type_url`` depends on) by the time it needs them?

        Subscribed by wildcard, they must be ACKed (nothing of that type in flight). A type the Envoy
        asks for by name once it has what names it (FCDS chains, named by the listener) must only be
        in the cache: the Envoy holds the listener warming until it has them, and they go out only
        once what *they* use is usable (their own ``_may_send``), so the order holds transitively and
        the listener need not wait for the clusters' ACK (a round trip saved per new SNI). Nor need it
        when a reconnecting Envoy told us it has them (``holding``: its clusters stay warm across streams).
        """
        dep = self.cache.depends_on(type_url)
        if dep is None:
            return True
        dst = self.states.get(dep)
        if dst is not None and dst.wildcard:
            if dst.nonce is not None:
                return dst.holding is not None and self._covers(dst.holding, uses)
            return dst.base is not None and self._covers(dst.base, uses)
        return self._covers(self.cache.snapshot(self.peer.view, dep), uses)

    def _covers(self, snap: TypeSnapshot, uses: frozenset[str]) -> bool:
        """``uses`` are all in ``snap``. Both are immutable, so the answer is kept per pair: a listener
        naming 5,000 chains is checked once per version, not on every pass."""
        if len(uses) <= 16:
            return uses.issubset(snap.resources.keys())
        hit = self._cover.get(id(uses))
        if hit is None or hit[0] is not uses or hit[1] is not snap:
            if len(self._cover) >= 8:
                self._cover.clear()
            hit = self._cover[id(uses)] = (uses, snap, uses.issubset(snap.resources.keys()))
        return hit[2]

    def _shared(self, st: DeltaState, target: TypeSnapshot) -> tuple[str, bytes] | None:
        """The message every wildcard stream of the view gets alike, when this one gets just that."""
        if not st.wildcard or st.names or st.held:
            return None
        if st.base is None:
            return self._first(st, target)
        delta = self.cache.delta(self.peer.view, st.base, target)
        if delta.removed and self._may_hold(st):
            return None
        st.base = target
        return delta.message() if delta else None

    def _first(self, st: DeltaState, target: TypeSnapshot) -> tuple[str, bytes] | None:
        """The first answer to a wildcard stream: everything, or, to a reconnect that holds a snapshot the
        cache published recently (the current one, or one a change or two ago), what every stream of the
        view got from there (nothing, or the shared delta): a dict comparison, not one per resource."""
        if not st.held_key:
            st.base = target
            return target.delta_message()
        held = self.cache.matching(self.peer.view, st.type_url, st.held_key)
        if held is None:
            return None  # it holds something else: its own answer (``_body``)
        delta = None if held is target else self.cache.delta(self.peer.view, held, target)
        if delta is not None and delta.removed and self._may_hold(st):
            return None
        st.base, st.held_key, st._initial, st.holding = target, b"", None, held
        return delta.message() if delta else target.held_message()

    def _may_hold(self, st: DeltaState) -> bool:
        """Removals of this type may have to wait for the dependent type (``_hold_removals``)."""
        return self.ordered and self._dependent(st.type_url) in self.states

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
                initial = st.initial_versions()
                updated = [res[n] for n in sorted(res) if initial.get(n) != res[n].version]
                removed = [n for n in initial if n not in target.resources]
                st.initial, st.held_key = {}, b""
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
        for name in removed:
            st.forget(name)  # explicit names: kept while held, the Envoy still has them
        if not updated and not removed and not first:
            return None
        if shared is not None and tuple(removed) == shared.removed:
            return shared.body
        # in name order (the same bytes from every replica); a name both explicit and wildcard goes once
        updated = sorted({r.name: r for r in updated}.values(), key=lambda r: r.name)
        return Delta.build(st.type_url, target.version, updated, removed).body

    def _explicit(self, st: DeltaState, target: TypeSnapshot):
        now = time.monotonic()
        check = st.dirty | set(st.waiting)
        if st.checked is None:
            check |= st.names
        elif st.checked is not target:  # only names that changed since (thousands of FCDS chains)
            changed = self.cache.delta(self.peer.view, st.checked, target)
            check |= {n for n in (*(r.name for r in changed.updated), *changed.removed) if n in st.names}
        st.checked = target
        updated, removed = [], []
        for name in check:
            r = target.resources.get(name)
            if r is not None:
                st.waiting.pop(name, None)
                had = st.known.get(name)
                if had is None and st.initial_versions().pop(name, None) == r.version:
                    st.know(name, r)  # a reconnecting Envoy has it already (initial_resource_versions)
                elif had is None or had.version != r.version:
                    st.know(name, r)
                    updated.append(r)
            elif name in st.known:
                removed.append(name)  # leaves ``known`` when the removal is sent (it may be held)
            elif name in st.dirty or name in st.waiting:
                if self.cache.may_appear(st.type_url, name) and st.waiting.setdefault(name, now + self.wait) > now:
                    continue
                st.waiting.pop(name, None)
                removed.append(name)  # report the unknown name as removed
        st.dirty.clear()
        return updated, removed

    def _hold_removals(self, st: DeltaState, removed: list[str]) -> list[str]:
        """A name still used by what the Envoy has of the dependent type (the chains or listener naming a
        cluster, the listener naming a chain) is removed after that is replaced; names it never had
        (answers to unknown subscriptions) are not held."""
        dependent = self._dependent(st.type_url)
        if not (removed and self.ordered and dependent):
            return removed
        dst = self.states.get(dependent)
        if dst is None:
            return removed
        holdable = [n for n in removed if st.wildcard or n in st.known]
        if dst.nonce is not None:  # in flight: what the Envoy is applying may still use any of them
            keep = set(holdable)
        else:
            keep = {n for n in holdable if dst.uses_name(n)}
        st.held |= keep
        return [n for n in removed if n not in keep]

