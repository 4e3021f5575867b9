"""Builder -> Envoy resources, serialized once and cached by builder record.

Unchanged builders keep the very same bytes across versions, so Envoy sees
unchanged filter chains byte for byte and updates them in place.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, backoff_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.sni_cluster.v3 import sni_cluster_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from shared import resources as rs
from shared.model import Builder

from . import wire

RESPONSE_RESOURCES = 2  # DiscoveryResponse.resources and DeltaDiscoveryResponse.resources
LISTENER_FILTER_CHAINS = 3
RESOURCE_NAME, RESOURCE_VERSION, RESOURCE_BODY = 3, 1, 2


@dataclass(frozen=True, slots=True)
class Rendered:
    """One resource, ready to be concatenated into any response."""

    name: str
    version: str  # content hash: equal on every replica for equal content
    sotw_field: bytes  # DiscoveryResponse.resources entry (an Any)
    delta_field: bytes  # DeltaDiscoveryResponse.resources entry (a Resource)

    @classmethod
    def of(cls, name: str, type_url: str, value: bytes) -> "Rendered":
        any_bytes = wire.any_message(type_url, value)
        version = hashlib.blake2b(any_bytes, digest_size=8).hexdigest()
        resource = (
            wire.field_str(RESOURCE_VERSION, version)
            + wire.field_bytes(RESOURCE_BODY, any_bytes)
            + wire.field_str(RESOURCE_NAME, name)
        )
        return cls(name, version, wire.field_bytes(RESPONSE_RESOURCES, any_bytes),
                   wire.field_bytes(RESPONSE_RESOURCES, resource))


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

    def __init__(self, mode: str, domain: str, *, connect_timeout: float = 1.0,
                 on_demand_timeout: float = 5.0, poison: frozenset[str] = frozenset(),
                 retry: ConnectRetry = ConnectRetry()):
        if mode not in rs.ROUTING_MODES:
            raise ValueError(f"unknown routing mode {mode!r}")
        self.mode = mode
        self.domain = domain
        self.connect_timeout = connect_timeout
        self.on_demand_timeout = on_demand_timeout
        self.retry = retry
        self.poison = poison  # test hook: builder ids rendered as clusters Envoy must reject
        self._clusters: dict[str, tuple[Builder, Rendered]] = {}
        self._chains: dict[str, tuple[Builder, bytes]] = {}

    @property
    def listener_uses_clusters(self) -> bool:
        """True when the listener names builder clusters (make-before-break matters)."""
        return self.mode == rs.FILTER_CHAINS

    @property
    def on_demand(self) -> bool:
        """Envoy asks for each builder's cluster when a connection needs it (ODCDS)."""
        return self.mode == rs.ON_DEMAND

    # --- clusters ---------------------------------------------------------
    def cluster(self, b: Builder) -> Rendered:
        hit = self._clusters.get(b.id)
        if hit is not None and hit[0] == b:
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

    # --- listener ---------------------------------------------------------
    def chain(self, b: Builder) -> bytes:
        """A filter_chains entry of the listener (field tag included)."""
        hit = self._chains.get(b.id)
        if hit is not None and hit[0] == b:
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

    def forget(self, ids: Iterable[str]) -> None:
        for bid in ids:
            self._clusters.pop(bid, None)
            self._chains.pop(bid, None)

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

    def _listener_head(self, spec: ListenerSpec) -> listener_pb2.Listener:
        return listener_pb2.Listener(
            name=rs.BUILDER_LISTENER,
            address=_socket(spec.address, spec.port),
            listener_filters=[listener_components_pb2.ListenerFilter(
                name=rs.TLS_INSPECTOR, typed_config=_pack(tls_inspector_pb2.TlsInspector()))],
        )

    def listener(self, spec: ListenerSpec, builders: Iterable[Builder]) -> Rendered:
        """The builder listener for one spec; per-builder chains are concatenated, not re-encoded."""
        head = self._listener_head(spec)
        if self.listener_uses_clusters:
            chains = [self.chain(b) for b in sorted(builders, key=lambda b: b.sni)]
            if not chains:  # Envoy needs at least one chain; this one matches no builder
                chains = [self._wildcard_chain(sni_cluster=False)]
        else:
            chains = [self._wildcard_chain(sni_cluster=True)]
        value = head.SerializeToString(deterministic=True) + b"".join(chains)
        return Rendered.of(rs.BUILDER_LISTENER, rs.LISTENER, value)

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
