"""Envoy bootstrap generation (``xdsctl bootstrap``), authored with typed Envoy config.

envoy-data-plane's dataclasses check field names and types as the config is
built; this runs once per Envoy start, far from any per-request path.
"""
from __future__ import annotations

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
from shared.addr import is_ip, parse_hostport
from shared.errors import ConfigError


HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
UPSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


@dataclass(frozen=True, kw_only=True)
class BootstrapSpec:
    node_id: str
    region: str = ""
    cluster: str = "builder-proxies"
    ads: str = rs.DEFAULT_ADS
    admin_port: int = 9901
    admin_address: str = "127.0.0.1"
    listener_port: int = rs.DEFAULT_LISTENER_PORT
    listener_address: str = rs.DEFAULT_LISTENER_ADDRESS
    routing: str = rs.FILTER_CHAINS
    fcds: bool = False  # filter_chains over FCDS (the xds-server's --fcds): implies delta
    delta: bool = False
    xds_ca: str | None = None  # ADS over TLS: trust this CA for the replicas' certificate
    xds_cert: str | None = None  # with xds_key: the client certificate (mTLS)
    xds_key: str | None = None
    xds_sni: str | None = None  # server name to verify (default: the ADS host)


def ads_endpoints(ads: str) -> list[tuple[str, int]]:
    """'HOST:PORT[,HOST:PORT...]': every replica an Envoy may use."""
    return [parse_hostport(part) for part in ads.split(",") if part.strip()]


def _xds_cluster(spec: BootstrapSpec) -> Cluster:
    hosts = ads_endpoints(spec.ads)
    endpoints = [LbEndpoint(endpoint=Endpoint(address=Address(socket_address=SocketAddress(address=h, port_value=p))))
                 for h, p in hosts]
    return Cluster(
        name=rs.XDS_CLUSTER,
        type=ClusterDiscoveryType.STATIC if all(is_ip(h) for h, _ in hosts) else ClusterDiscoveryType.STRICT_DNS,
        connect_timeout=timedelta(seconds=1),
        load_assignment=ClusterLoadAssignment(
            cluster_name=rs.XDS_CLUSTER, endpoints=[LocalityLbEndpoints(lb_endpoints=endpoints)]),
    )


def _tls_socket(spec: BootstrapSpec) -> dict:
    """UpstreamTlsContext for the ADS cluster (typed config in its JSON form)."""
    context: dict = {"validationContext": {"trustedCa": {"filename": spec.xds_ca}}, "alpnProtocols": ["h2"]}
    if spec.xds_cert and spec.xds_key:
        context["tlsCertificates"] = [{"certificateChain": {"filename": spec.xds_cert},
                                       "privateKey": {"filename": spec.xds_key}}]
    sni = spec.xds_sni or ads_endpoints(spec.ads)[0][0]
    context["validationContext"]["matchTypedSubjectAltNames"] = [{"sanType": "DNS", "matcher": {"exact": sni}}]
    return {"name": "envoy.transport_sockets.tls",
            "typedConfig": {"@type": rs.TYPE_PREFIX + UPSTREAM_TLS, "sni": sni, "commonTlsContext": context}}


def build(spec: BootstrapSpec) -> Bootstrap:
    if spec.fcds and spec.routing not in rs.FCDS_MODES:
        raise ConfigError(f"--fcds goes with --routing {' or '.join(rs.FCDS_MODES)}, not {spec.routing}")
    # on_demand and FCDS subscribe by name as connections / listeners need it: delta ADS only
    delta = spec.delta or spec.fcds or spec.routing == rs.ON_DEMAND
    ads = ConfigSource(ads=AggregatedConfigSource(), resource_api_version=ApiVersion.V3)
    metadata = Struct(fields={
        rs.META_LISTENER_PORT: Value(string_value=str(spec.listener_port)),
        rs.META_LISTENER_ADDRESS: Value(string_value=spec.listener_address),
        rs.META_REGION: Value(string_value=spec.region),
        rs.META_ROUTING: Value(string_value=rs.routing_name(spec.routing, spec.fcds)),
    })
    dynamic = BootstrapDynamicResources(
        ads_config=ApiConfigSource(
            api_type=ApiConfigSourceApiType.DELTA_GRPC if delta else ApiConfigSourceApiType.GRPC,
            transport_api_version=ApiVersion.V3,
            grpc_services=[GrpcService(envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=rs.XDS_CLUSTER))],
            set_node_on_first_message_only=True),
        lds_config=ads,
        # on_demand: no wildcard CDS; tcp_proxy asks for each builder's cluster when needed
        cds_config=None if spec.routing == rs.ON_DEMAND else ads,
    )
    return Bootstrap(
        node=Node(id=spec.node_id, cluster=spec.cluster, locality=Locality(region=spec.region), metadata=metadata),
        admin=Admin(address=Address(socket_address=SocketAddress(address=spec.admin_address,
                                                                port_value=spec.admin_port))),
        dynamic_resources=dynamic,
        static_resources=BootstrapStaticResources(clusters=[_xds_cluster(spec)]),
    )


_AMBIGUOUS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", ""}


class _Dumper(yaml.SafeDumper):
    """Quotes strings that a YAML 1.1 reader (Envoy's yaml-cpp) would take for a bool, null or number."""


def _str(dumper: yaml.SafeDumper, value: str):
    ambiguous = value.lower() in _AMBIGUOUS or value.replace(".", "", 1).lstrip("-+").isdigit()
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if ambiguous else None)


_Dumper.add_representer(str, _str)


def render_yaml(spec: BootstrapSpec) -> str:
    data = build(spec).to_dict()
    cluster = data["staticResources"]["clusters"][0]
    # gRPC needs HTTP/2 to the control plane
    cluster["typedExtensionProtocolOptions"] = {
        HTTP_OPTIONS: {"@type": rs.TYPE_PREFIX + HTTP_OPTIONS, "explicitHttpConfig": {"http2ProtocolOptions": {}}}}
    if spec.xds_ca:
        cluster["transportSocket"] = _tls_socket(spec)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)
