"""Envoy bootstrap generation (``xdsctl bootstrap``), authored with typed Envoy config.

envoy-data-plane's dataclasses check field names and types as the config is
built; this runs once per Envoy start, far from any per-request path.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import timedelta

import yaml
from envoy_data_plane.envoy.config.bootstrap.v3 import Admin, Bootstrap, BootstrapDynamicResources, BootstrapStaticResources
from envoy_data_plane.envoy.config.cluster.v3 import Cluster, ClusterDiscoveryType
from envoy_data_plane.envoy.config.core.v3 import (
    Address, AggregatedConfigSource, ApiConfigSource, ApiConfigSourceApiType, ApiVersion, ConfigSource,
    GrpcService, GrpcServiceEnvoyGrpc, Locality, Node, SocketAddress)
from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints
from envoy_data_plane.google.protobuf import Struct, Value

from shared import resources as rs

from .peers import ListenerDefaults

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@dataclass(frozen=True, kw_only=True)
class BootstrapSpec:
    node_id: str
    region: str = ""
    cluster: str = "builder-proxies"
    ads: str = "127.0.0.1:18000"
    admin_port: int = 9901
    admin_address: str = "127.0.0.1"
    listener_port: int = ListenerDefaults.port
    listener_address: str = "0.0.0.0"
    routing: str = "filter_chains"
    delta: bool = False


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _xds_cluster(spec: BootstrapSpec) -> Cluster:
    host, port = _split(spec.ads)
    endpoint = LbEndpoint(endpoint=Endpoint(address=Address(socket_address=SocketAddress(address=host, port_value=port))))
    return Cluster(
        name=rs.XDS_CLUSTER,
        type=ClusterDiscoveryType.STATIC if _is_ip(host) else ClusterDiscoveryType.STRICT_DNS,
        connect_timeout=timedelta(seconds=1),
        load_assignment=ClusterLoadAssignment(
            cluster_name=rs.XDS_CLUSTER, endpoints=[LocalityLbEndpoints(lb_endpoints=[endpoint])]),
    )


def build(spec: BootstrapSpec) -> Bootstrap:
    delta = spec.delta or spec.routing == "on_demand"
    ads = ConfigSource(ads=AggregatedConfigSource(), resource_api_version=ApiVersion.V3)
    metadata = Struct(fields={
        "listener_port": Value(string_value=str(spec.listener_port)),
        "listener_address": Value(string_value=spec.listener_address),
        "region": Value(string_value=spec.region),
        "routing": Value(string_value=spec.routing),
    })
    dynamic = BootstrapDynamicResources(
        ads_config=ApiConfigSource(
            api_type=ApiConfigSourceApiType.DELTA_GRPC if delta else ApiConfigSourceApiType.GRPC,
            transport_api_version=ApiVersion.V3,
            grpc_services=[GrpcService(envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=rs.XDS_CLUSTER))],
            set_node_on_first_message_only=True),
        lds_config=ads,
        # on_demand: no wildcard CDS; tcp_proxy asks for each builder's cluster when needed
        cds_config=None if spec.routing == "on_demand" else ads,
    )
    return Bootstrap(
        node=Node(id=spec.node_id, cluster=spec.cluster, locality=Locality(region=spec.region), metadata=metadata),
        admin=Admin(address=Address(socket_address=SocketAddress(address=spec.admin_address,
                                                                port_value=spec.admin_port))),
        dynamic_resources=dynamic,
        static_resources=BootstrapStaticResources(clusters=[_xds_cluster(spec)]),
    )


def render_yaml(spec: BootstrapSpec) -> str:
    data = build(spec).to_dict()
    cluster = data["staticResources"]["clusters"][0]
    # gRPC needs HTTP/2 to the control plane
    cluster["typedExtensionProtocolOptions"] = {
        HTTP_OPTIONS: {"@type": rs.TYPE_PREFIX + HTTP_OPTIONS, "explicitHttpConfig": {"http2ProtocolOptions": {}}}}
    return yaml.safe_dump(data, sort_keys=False)
