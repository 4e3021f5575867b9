"""Builder -> Envoy resources, serialized once and cached by builder record.

Unchanged builders keep the very same bytes across versions, so Envoy sees
unchanged filter chains byte for byte and updates them in place.

The renderer also states the layout of its mode: which types it serves, in
which order they go out, and which type's resources name which (``types``,
``depends_on``); the cache passes that to the transports, which never look at
the mode itself. With FCDS (filter_chains over the Filter Chain Discovery
Service) each builder's chain is its own FilterChain resource and the
listener carries only the SNI -> chain name map (``filter_chain_matcher``),
built by joining one cached entry per builder.
"""
from __future__ import annotations

import hashlib
import operator
from dataclasses import dataclass
from typing import Iterable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, backoff_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.sni_cluster.v3 import sni_cluster_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.matching.common_inputs.network.v3 import network_inputs_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from xds.core.v3 import extension_pb2
from xds.type.matcher.v3 import matcher_pb2

from shared import resources as rs
from shared.model import Builder

from . import wire

RESPONSE_RESOURCES = 2  # DiscoveryResponse.resources and DeltaDiscoveryResponse.resources
LISTENER_FILTER_CHAINS = 3
LISTENER_FILTER_CHAIN_MATCHER, MATCHER_TREE, TREE_EXACT_MATCH_MAP = 32, 2, 2  # Listener -> Matcher -> MatcherTree
RESOURCE_NAME, RESOURCE_VERSION, RESOURCE_BODY = 3, 1, 2
_SNI = operator.attrgetter("sni")


@dataclass(frozen=True, slots=True)
class Rendered:
    """One resource, ready to be concatenated into any response."""

    name: str
    version: str  # content hash: equal on every replica for equal content
    sotw_field: bytes  # DiscoveryResponse.resources entry (an Any)
    delta_field: bytes  # DeltaDiscoveryResponse.resources entry (a Resource)
    uses: frozenset[str] = frozenset()  # names of resources of the type it depends on (a chain: its cluster)

    @classmethod
    def of(cls, name: str, type_url: str, value: bytes, uses: frozenset[str] = frozenset()) -> "Rendered":
        any_parts = wire.any_message(type_url, value)
        digest = hashlib.blake2b(digest_size=8)
        for part in any_parts:
            digest.update(part)
        version = digest.hexdigest()
        resource = [wire.field_str(RESOURCE_VERSION, version), *wire.nested(RESOURCE_BODY, any_parts),
                    wire.field_str(RESOURCE_NAME, name)]
        # one copy of ``value`` per field: a large listener is not copied at every level of nesting
        return cls(name, version, b"".join(wire.nested(RESPONSE_RESOURCES, any_parts)),
                   b"".join(wire.nested(RESPONSE_RESOURCES, resource)), uses)


@dataclass(frozen=True, slots=True)
class ConnectRetry:
    """tcp_proxy's upstream connect attempts: a route can be live before its builder listens
    (BuildKit still starting), and the first connection should wait for it, not fail.

    Envoy waits a random time in [0, base), [0, 2 base), ... capped at [0, max) between
    attempts: 20 attempts with 50 ms / 200 ms span about 1.8 s on average and more than
    1 s in all but about 1 in 1,000 connections."""

    attempts: int = 20
    base: float = 0.05
    max: float = 0.2


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """What an Envoy's listener depends on besides the builders."""

    address: str = rs.DEFAULT_LISTENER_ADDRESS
    port: int = rs.DEFAULT_LISTENER_PORT


def _pack(message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def _socket(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=address, port_value=port))


class Renderer:
    """Renders one routing mode. Per-builder output is memoized by record."""

    def __init__(self, mode: str, domain: str, *, fcds: bool = False, connect_timeout: float = 1.0,
                 on_demand_timeout: float = 5.0, poison: frozenset[str] = frozenset(),
                 retry: ConnectRetry = ConnectRetry()):
        if mode not in rs.ROUTING_MODES:
            raise ValueError(f"unknown routing mode {mode!r}")
        if fcds and mode not in rs.FCDS_MODES:
            raise ValueError(f"FCDS serves the per-SNI chains of {', '.join(rs.FCDS_MODES)}, not {mode!r}")
        self.mode = mode
        self.fcds = fcds
        self.domain = domain
        self.connect_timeout = connect_timeout
        self.on_demand_timeout = on_demand_timeout
        self.retry = retry
        self.poison = poison  # test hook: builder ids rendered as clusters Envoy must reject
        self._clusters: dict[str, tuple[Builder, Rendered]] = {}
        self._chains: dict[str, tuple[Builder, bytes]] = {}  # inline listener chains (filter_chains)
        self._fc: dict[str, tuple[Builder, Rendered]] = {}  # FilterChain resources (FCDS)
        self._entries: dict[str, tuple[Builder, bytes]] = {}  # matcher map entries SNI -> chain name (FCDS)
        if fcds:
            self._depends = {rs.LISTENER: rs.FILTER_CHAIN, rs.FILTER_CHAIN: rs.CLUSTER}
        elif mode == rs.FILTER_CHAINS:
            self._depends = {rs.LISTENER: rs.CLUSTER}
        else:
            self._depends = {}

    # --- the layout of the mode (snapshot.SnapshotSource, through the cache) ----------
    @property
    def types(self) -> tuple[str, ...]:
        """The types served, in make-before-break order: each before the types that name its resources."""
        return (rs.CLUSTER, rs.FILTER_CHAIN, rs.LISTENER) if self.fcds else (rs.CLUSTER, rs.LISTENER)

    def depends_on(self, type_url: str) -> str | None:
        """The type whose resources ``type_url``'s resources name (their ``uses``), or None."""
        return self._depends.get(type_url)

    @property
    def per_sni_listener(self) -> bool:
        """The listener names each builder (a chain, or a matcher entry with FCDS): it changes with the set."""
        return self.mode == rs.FILTER_CHAINS

    def listener_changed(self, old: Builder | None, new: Builder | None) -> bool:
        """Can this builder change (None: not in the view) change the listener? With FCDS only an SNI
        that comes or goes does (its matcher entry); the builder's cluster and chain are their own."""
        if not self.per_sni_listener:
            return False
        if self.fcds:
            return (old.sni if old else None) != (new.sni if new else None)
        return True

    @property
    def routing(self) -> str:
        """What this renderer serves, as a bootstrap names it in its node metadata (rs.META_ROUTING)."""
        return rs.routing_name(self.mode, self.fcds)

    @property
    def delta_only(self) -> bool:
        """FCDS: Envoy subscribes to chains by name, which only delta xDS can carry."""
        return self.fcds

    @property
    def on_demand(self) -> bool:
        """Envoy asks for each builder's cluster when a connection needs it (ODCDS)."""
        return self.mode == rs.ON_DEMAND

    # --- clusters ---------------------------------------------------------
    def cluster(self, b: Builder) -> Rendered:
        hit = self._clusters.get(b.id)
        if hit is not None and (hit[0] is b or hit[0] == b):  # the same record: most lookups
            return hit[1]
        rendered = Rendered.of(b.sni, rs.CLUSTER, self._cluster_proto(b).SerializeToString())
        self._clusters[b.id] = (b, rendered)
        return rendered

    def _cluster_proto(self, b: Builder) -> cluster_pb2.Cluster:
        timeout = -1.0 if b.id in self.poison else self.connect_timeout  # Envoy NACKs a timeout <= 0
        endpoint = endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=_socket(b.address, b.port)))
        return cluster_pb2.Cluster(
            name=b.sni,
            type=cluster_pb2.Cluster.STATIC,
            connect_timeout=_duration(timeout),
            load_assignment=endpoint_pb2.ClusterLoadAssignment(
                cluster_name=b.sni,
                endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])]),
        )

    # --- filter chains ------------------------------------------------------
    def chain(self, b: Builder) -> bytes:
        """A filter_chains entry of the listener (field tag included)."""
        hit = self._chains.get(b.id)
        if hit is not None and (hit[0] is b or hit[0] == b):  # the same record: most lookups
            return hit[1]
        proto = listener_components_pb2.FilterChain(
            name=b.sni,
            filter_chain_match=listener_components_pb2.FilterChainMatch(
                server_names=[b.sni], transport_protocol="tls"),
            filters=[self._tcp_proxy(b.sni)],
        )
        out = wire.field_bytes(LISTENER_FILTER_CHAINS, proto.SerializeToString(deterministic=True))
        self._chains[b.id] = (b, out)
        return out

    def filter_chain(self, b: Builder) -> Rendered:
        """FCDS: the builder's chain as a FilterChain resource, named like its cluster.

        No filter_chain_match: the listener's matcher picks the chain by name.
        """
        hit = self._fc.get(b.id)
        if hit is not None and (hit[0] is b or hit[0] == b):  # the same record: most lookups
            return hit[1]
        proto = listener_components_pb2.FilterChain(name=b.sni, filters=[self._tcp_proxy(b.sni)])
        rendered = Rendered.of(b.sni, rs.FILTER_CHAIN, proto.SerializeToString(deterministic=True),
                               uses=frozenset((b.sni,)))
        self._fc[b.id] = (b, rendered)
        return rendered

    def forget(self, ids: Iterable[str]) -> None:
        for bid in ids:
            for memo in (self._clusters, self._chains, self._fc, self._entries):
                memo.pop(bid, None)

    def _tcp_proxy(self, cluster: str) -> listener_components_pb2.Filter:
        proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=rs.TCP_STAT_PREFIX, cluster=cluster)
        if self.on_demand:
            proxy.on_demand.CopyFrom(tcp_proxy_pb2.TcpProxy.OnDemand(
                odcds_config=config_source_pb2.ConfigSource(
                    ads=config_source_pb2.AggregatedConfigSource(),
                    resource_api_version=config_source_pb2.V3),
                timeout=_duration(self.on_demand_timeout)))
        if self.retry.attempts > 1:
            proxy.max_connect_attempts.CopyFrom(wrappers_pb2.UInt32Value(value=self.retry.attempts))
            proxy.backoff_options.CopyFrom(backoff_pb2.BackoffStrategy(
                base_interval=_duration(self.retry.base), max_interval=_duration(self.retry.max)))
        return listener_components_pb2.Filter(name=rs.TCP_PROXY, typed_config=_pack(proxy))

    # --- listener ---------------------------------------------------------
    def _listener_head(self, spec: ListenerSpec) -> listener_pb2.Listener:
        return listener_pb2.Listener(
            name=rs.BUILDER_LISTENER,
            address=_socket(spec.address, spec.port),
            listener_filters=[listener_components_pb2.ListenerFilter(
                name=rs.TLS_INSPECTOR, typed_config=_pack(tls_inspector_pb2.TlsInspector()))],
        )

    def listener(self, spec: ListenerSpec, builders: Iterable[Builder]) -> Rendered:
        """The builder listener for one spec; per-builder parts are concatenated, not re-encoded.

        Its ``uses`` are what it names: the builders' clusters (filter_chains) or chains (FCDS).
        """
        if self.fcds:
            return self._fcds_listener(spec, builders)
        head = self._listener_head(spec)
        uses = frozenset()
        if self.per_sni_listener:
            ordered = sorted(builders, key=_SNI)
            chains = [self.chain(b) for b in ordered]
            uses = frozenset(b.sni for b in ordered)
            if not chains:  # Envoy needs at least one chain; this one matches no builder
                chains = [self._wildcard_chain(sni_cluster=False)]
        else:
            chains = [self._wildcard_chain(sni_cluster=True)]
        value = b"".join([head.SerializeToString(deterministic=True), *chains])
        return Rendered.of(rs.BUILDER_LISTENER, rs.LISTENER, value, uses)

    def _wildcard_chain(self, *, sni_cluster: bool) -> bytes:
        filters = [self._tcp_proxy(rs.NO_ROUTE_CLUSTER)]
        if sni_cluster:
            filters.insert(0, listener_components_pb2.Filter(
                name=rs.SNI_CLUSTER, typed_config=_pack(sni_cluster_pb2.SniCluster())))
        proto = listener_components_pb2.FilterChain(
            name="builder-domain" if sni_cluster else "no-builders",
            filter_chain_match=listener_components_pb2.FilterChainMatch(
                server_names=[f"*.{self.domain}" if sni_cluster else rs.NO_ROUTE_CLUSTER],
                transport_protocol="tls"),
            filters=filters,
        )
        return wire.field_bytes(LISTENER_FILTER_CHAINS, proto.SerializeToString(deterministic=True))

    # --- the FCDS listener ------------------------------------------------------
    def _fcds_listener(self, spec: ListenerSpec, builders: Iterable[Builder]) -> Rendered:
        """head + the stub chain + fcds_config + the matcher, whose map is a join of cached entries.

        The stub is an inline chain the matcher never names: without one, Envoy 1.40 replaces the
        listener whole on every update, draining every connection (docs/routing.md, "How each mode
        works in Envoy 1.40").
        """
        head = self._listener_head(spec)
        head.fcds_config.CopyFrom(listener_pb2.Listener.FcdsConfig(
            name=rs.BUILDER_LISTENER, config_source=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3)))
        head.filter_chains.append(listener_components_pb2.FilterChain(
            name=rs.FCDS_STUB_CHAIN, filters=[self._tcp_proxy(rs.NO_ROUTE_CLUSTER)]))
        ordered = sorted(builders, key=_SNI)
        tree = []
        if ordered:  # a map needs an entry; with none, the matcher matches nothing
            tree = wire.nested(MATCHER_TREE, [self._server_name_input(), *wire.nested(
                TREE_EXACT_MATCH_MAP, [self._matcher_entry(b) for b in ordered])])
        value = b"".join([head.SerializeToString(deterministic=True),
                          *wire.nested(LISTENER_FILTER_CHAIN_MATCHER, tree)])
        return Rendered.of(rs.BUILDER_LISTENER, rs.LISTENER, value, frozenset(b.sni for b in ordered))

    def _matcher_entry(self, b: Builder) -> bytes:
        """One ``exact_match_map.map`` entry, SNI -> the name of the builder's chain (field tag included)."""
        hit = self._entries.get(b.id)
        if hit is not None and (hit[0] is b or hit[0] == b):  # the same record: most lookups
            return hit[1]
        action = extension_pb2.TypedExtensionConfig(
            name=rs.CHAIN_NAME_ACTION, typed_config=_pack(wrappers_pb2.StringValue(value=b.sni)))
        out = matcher_pb2.Matcher.MatcherTree.MatchMap(
            map={b.sni: matcher_pb2.Matcher.OnMatch(action=action)}).SerializeToString(deterministic=True)
        self._entries[b.id] = (b, out)
        return out

    @staticmethod
    def _server_name_input() -> bytes:
        tree = matcher_pb2.Matcher.MatcherTree(input=extension_pb2.TypedExtensionConfig(
            name=rs.SERVER_NAME_INPUT, typed_config=_pack(network_inputs_pb2.ServerNameInput())))
        return tree.SerializeToString(deterministic=True)
