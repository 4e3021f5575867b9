"""Versioned views of the builder set, rendered once and shared by every stream.

The cache implements ``snapshot.SnapshotSource``, the transports' whole
contract with it; the follower writes it with ``replace`` and ``apply``.

A *view* is what one class of Envoys may see: a region (or all regions) and
the listener spec from its bootstrap. For each (view, type) the cache holds
one immutable ``TypeSnapshot`` per content change; every stream with that view
sends the same bytes. Per change, work is proportional to what changed (the
filter_chains listener is re-joined from cached chain bytes: a memcpy).

Series per view: clusters (one per builder), the listener, and with FCDS the
filter chains (one per builder, like clusters). A snapshot's ``uses`` are the
names its resources route to (the listener: its chains, or clusters without
FCDS; the chains: their clusters): the transports' make before break. With
FCDS a builder change that keeps its SNI touches only its cluster and chain;
a new or removed SNI re-joins the listener's matcher map from cached entries.

Pushes are paced (``push_interval``): a version after a quiet moment is
published to the transports at once; versions that follow within the
interval are held and published together when it has passed, so under churn
every Envoy gets at most one response per type per interval, however many
changes a second Redis sees. A version that routes a builder its provisioner
has just registered (``{xds}:intents``) is never held: the provisioner is
waiting for it (``xdsctl register --wait``), and DNS churn must not delay it.

Invariant: this module never imports grpc and never calls Redis.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from envoy.config.core.v3 import base_pb2

from shared import resources as rs
from shared.errors import StreamRefused
from shared.model import Builder

from .nodes import node_listener, node_region
from .render import ListenerSpec, Rendered, Renderer
from .snapshot import Delta, TypeSnapshot

log = logging.getLogger(__name__)
DIFF_LOG = 64  # versions of per-view change sets kept for delta streams
RECENT = 4  # published snapshots per (view, type) a reconnecting Envoy may hold (``Cache.matching``)
Pair = tuple[Builder | None, Builder | None]


@dataclass(frozen=True, slots=True)
class ViewKey:
    region: str | None  # None: every region
    listener: ListenerSpec
    _hash: int = field(init=False, repr=False, compare=False)  # looked up on every push: hashed once

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.region, self.listener)))

    def __hash__(self) -> int:
        return self._hash


def _registered(old: Builder | None, new: Builder | None) -> bool:
    """A route its provisioner just registered (an intent DNS has not confirmed yet), new or moved."""
    return new is not None and new.unconfirmed and (old is None or old.endpoint != new.endpoint)


def _differs(old: Rendered | None, new: Rendered | None) -> bool:
    """A new record with the same bytes (an FCDS chain when only the address moved) is no change."""
    if old is None or new is None:
        return old is not new
    return old is not new and old.version != new.version


class _Series:
    """The snapshots of one (view, type): the newest, and a log of changed names.

    The log is keyed by ``seq``, not by Redis version: after a reset the
    versions start again and would alias older entries.
    """

    def __init__(self, snap: TypeSnapshot):
        self.current = snap  # what the transports see (published)
        self.latest = snap  # the newest, published at the next push
        self.recent: collections.deque[TypeSnapshot] = collections.deque([snap], maxlen=RECENT)  # published
        self.log: collections.deque[tuple[int, frozenset[str]]] = collections.deque(maxlen=DIFF_LOG)
        self.complete_from = snap.seq  # every change after this seq is in the log
        self.deltas: collections.OrderedDict[tuple, tuple] = (
            collections.OrderedDict())

    def advance(self, snap: TypeSnapshot, changed: frozenset[str]) -> None:
        if len(self.log) == self.log.maxlen:
            self.complete_from = self.log[0][0]
        self.log.append((snap.seq, changed))
        self.latest = snap

    def publish(self) -> None:
        if self.current is not self.latest:
            self.current = self.latest
            self.recent.append(self.latest)

    def changed_between(self, old: int, new: int) -> set[str] | None:
        """Names changed after seq ``old`` up to ``new``; None when the log does not reach back."""
        if old < self.complete_from:
            return None
        out: set[str] = set()
        for seq, names in self.log:
            if old < seq <= new:
                out |= names
        return out


class Cache:
    """The rendered state of the builder set for every view in use."""

    def __init__(self, renderer: Renderer, *, region_scope: str = rs.SCOPE_ALL, push_interval: float = 0.0,
                 listener: ListenerSpec = ListenerSpec(), max_views: int = 256):
        self.renderer = renderer
        self.region_scope = region_scope
        self.listener = listener  # a node whose bootstrap names no listener gets this one
        self.max_views = max_views
        self._open: dict[ViewKey, list] = {}  # view -> [the one key object, streams using it]
        self.push_interval = push_interval
        self._pushed_at = -float("inf")  # monotonic time of the last publish
        self._timer: asyncio.TimerHandle | None = None  # a publish held back by push_interval
        self.version = -1  # -1 until the first full load
        self.seq = 0  # counts updates; never goes back, unlike a Redis version after a reset
        self.builders: dict[str, Builder] = {}  # its own: the follower keeps another
        self._series: dict[tuple[ViewKey, str], _Series] = {}
        self._watchers: set[Callable[[], None]] = set()
        self._seen_at: dict[int, float] = {}
        self._domain_suffix = "." + renderer.domain

    @property
    def ready(self) -> bool:
        return self.version >= 0

    @property
    def held(self) -> bool:
        """A version is held back by push_interval: the transports have not seen it yet."""
        return self._timer is not None

    def view_for(self, region: str | None, listener: ListenerSpec) -> ViewKey:
        return ViewKey(region if self.region_scope == rs.SCOPE_LOCAL else None, listener)

    # --- views (snapshot.SnapshotSource) ----------------------------------------
    def open_view(self, node: base_pb2.Node) -> ViewKey:
        """The node's view (region if --region-scope is local, and the listener its bootstrap asks for)."""
        region = node_region(node)
        if region is None and self.region_scope == rs.SCOPE_LOCAL:
            log.warning("node %s has no region while --region-scope is local: it sees no builders", node.id)
            region = ""
        view = self.view_for(region, node_listener(node, self.listener))
        entry = self._open.get(view)
        if entry is None:
            if len(self._open) >= self.max_views:
                raise StreamRefused("RESOURCE_EXHAUSTED", f"this replica serves at most {self.max_views} "
                                                          "distinct views (region, listener address and port)")
            entry = self._open[view] = [view, 0]
        entry[1] += 1
        return entry[0]  # one object per view: lookups by it compare by identity

    def close_view(self, view: ViewKey) -> None:
        """A stream let go of ``view``; with none left its snapshots are forgotten (rebuilt on demand)."""
        entry = self._open.get(view)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self._open[view]
            for type_url in self.types:
                self._series.pop((view, type_url), None)

    # --- writers (the follower) ------------------------------------------------
    def replace(self, version: int, builders: Mapping[str, Builder]) -> None:
        """A full load: move to ``version`` holding exactly ``builders`` (copied)."""
        old = self.builders
        self.builders = dict(builders)
        self.renderer.forget(set(old) - set(builders))
        changes = [(old.get(i), builders.get(i)) for i in set(old) | set(builders) if old.get(i) != builders.get(i)]
        self._moved(version, changes, None)
        self._publish()  # a full load (start, resync) goes out at once

    def apply(self, version: int, changes: list[Pair], at: float | None = None) -> None:
        """One change entry: ``changes`` lists (old, new) records, None for added / removed.

        ``at`` is the wall-clock time the change entered Redis (from its stream id).
        """
        for old, new in changes:
            if new is not None:
                self.builders[new.id] = new
            elif old is not None:
                self.builders.pop(old.id, None)
        self.renderer.forget(old.id for old, new in changes if old is not None and new is None)
        self._moved(version, changes, at)
        if any(_registered(old, new) for old, new in changes):
            self._publish()  # its provisioner waits for this route (xdsctl register --wait): never paced
        else:
            self._publish_paced()

    def _moved(self, version: int, changes: list[Pair], at: float | None) -> None:
        self.version = version
        self.seq += 1
        self._seen_at[version] = at if at is not None else time.time()
        while len(self._seen_at) > 256:
            del self._seen_at[next(iter(self._seen_at))]
        for (view, type_url), series in self._series.items():
            self._advance(series, view, type_url, changes)

    def _publish_paced(self) -> None:
        if self._timer is not None:
            return  # a publish is due already: this version goes with it
        wait = self._pushed_at + self.push_interval - time.monotonic()
        if wait <= 0:
            self._publish()
            return
        try:
            self._timer = asyncio.get_running_loop().call_later(wait, self._publish)
        except RuntimeError:  # no event loop (a cache driven by hand): nothing to pace
            self._publish()

    def _publish(self) -> None:
        """Let the transports see the newest snapshots, and tell them."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pushed_at = time.monotonic()
        for series in self._series.values():
            series.publish()
        for callback in tuple(self._watchers):
            callback()

    def _advance(self, series: _Series, view: ViewKey, type_url: str, changes: list[Pair]) -> None:
        relevant = [(o if self._in_view(view, o) else None, n if self._in_view(view, n) else None)
                    for o, n in changes]
        relevant = [(o, n) for o, n in relevant if o is not None or n is not None]
        if not relevant:
            return
        prev = series.latest
        if type_url == rs.LISTENER:
            # one wildcard chain never changes; an FCDS listener only when an SNI comes or goes
            if not any(self.renderer.listener_changed(o, n) for o, n in relevant):
                return
            resources = self._listeners(view)
            changed = {n for n in resources if prev.resources.get(n) is None
                       or prev.resources[n].version != resources[n].version}
        else:  # one resource per builder (clusters; FCDS chains)
            render = self._per_builder(type_url)
            resources = dict(prev.resources)
            changed = set()
            for old, new in relevant:
                if old is not None:
                    resources.pop(old.sni, None)
                    changed.add(old.sni)
                if new is not None:
                    resources[new.sni] = render(new)
                    changed.add(new.sni)
            changed = {n for n in changed if _differs(prev.resources.get(n), resources.get(n))}
        if changed:
            series.advance(TypeSnapshot(type_url, self.version, resources, self._uses(type_url, resources),
                                        seq=self.seq), frozenset(changed))

    def _per_builder(self, type_url: str):
        return self.renderer.filter_chain if type_url == rs.FILTER_CHAIN else self.renderer.cluster

    def _uses(self, type_url: str, resources: Mapping[str, Rendered]) -> frozenset[str]:
        """What a snapshot's resources name, together (make before break checks it against the Envoy)."""
        if self.renderer.depends_on(type_url) is None:
            return frozenset()
        return frozenset().union(*(r.uses for r in resources.values()))

    def _in_view(self, view: ViewKey, b: Builder | None) -> bool:
        return b is not None and (view.region is None or b.region == view.region)

    def _listeners(self, view: ViewKey) -> dict[str, Rendered]:
        members = [b for b in self.builders.values() if self._in_view(view, b)]
        listener = self.renderer.listener(view.listener, members)
        return {listener.name: listener}

    # --- readers (the transports: snapshot.SnapshotSource) -----------------------
    @property
    def types(self) -> tuple[str, ...]:
        return self.renderer.types

    def depends_on(self, type_url: str) -> str | None:
        return self.renderer.depends_on(type_url)

    @property
    def delta_only(self) -> bool:
        return self.renderer.delta_only

    @property
    def routing(self) -> str:
        return self.renderer.routing

    def may_appear(self, type_url: str, name: str) -> bool:
        return type_url == rs.CLUSTER and self.renderer.on_demand and name.endswith(self._domain_suffix)

    def snapshot(self, view: ViewKey, type_url: str) -> TypeSnapshot:
        series = self._series.get((view, type_url))
        if series is None:
            series = _Series(self._full(view, type_url))
            self._series[(view, type_url)] = series
        return series.current

    def _full(self, view: ViewKey, type_url: str) -> TypeSnapshot:
        if type_url == rs.LISTENER:
            resources = self._listeners(view)
        else:
            render = self._per_builder(type_url)
            resources = {b.sni: render(b) for b in self.builders.values() if self._in_view(view, b)}
        return TypeSnapshot(type_url, self.version, resources, self._uses(type_url, resources), seq=self.seq)

    def matching(self, view: ViewKey, type_url: str, held: bytes) -> TypeSnapshot | None:
        """A recently published snapshot that a reconnecting Envoy holds exactly, newest first: one
        bytes comparison each, the key built once per snapshot (see ``SnapshotSource.matching``)."""
        series = self._series.get((view, type_url))
        for snap in reversed(series.recent) if series is not None else ():
            if snap.held_key() == held:
                return snap
        return None

    def seen_at(self, version: int) -> float:
        """Wall-clock time ``version`` entered Redis (or reached us, after a full load)."""
        return self._seen_at.get(version, time.time())

    def ack_latency(self, version: int) -> float:
        """Seconds from ``version`` entering Redis to now (an ACK), never negative."""
        return max(0.0, time.time() - self.seen_at(version))

    def delta(self, view: ViewKey, old: TypeSnapshot, new: TypeSnapshot) -> Delta:
        """old -> new for wildcard streams; memoized per (view, type, old, new)."""
        series = self._series[(view, new.type_url)]
        key = (id(old), id(new))
        hit = series.deltas.get(key)
        if hit is not None:
            return hit[2]
        names = series.changed_between(old.seq, new.seq)
        if names is None:
            names = set(old.resources) | set(new.resources)
        updated = [new.resources[n] for n in sorted(names)
                   if n in new.resources and (n not in old.resources or old.resources[n].version != new.resources[n].version)]
        removed = [n for n in sorted(names) if n in old.resources and n not in new.resources]
        delta = Delta.build(new.type_url, new.version, updated, removed)
        series.deltas[key] = (old, new, delta)  # holding both keeps their ids unique
        self._trim(series)
        return delta

    @staticmethod
    def _trim(series: _Series) -> None:
        while len(series.deltas) > 16:
            series.deltas.popitem(last=False)

    def watch(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs after every new version (see ``SnapshotSource.watch``)."""
        self._watchers.add(callback)

    def unwatch(self, callback: Callable[[], None]) -> None:
        self._watchers.discard(callback)
