"""Envoy type URLs and the names of filters and static resources. No other module spells them."""
from __future__ import annotations

TYPE_PREFIX = "type.googleapis.com/"
CLUSTER = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
LISTENER = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
SUPPORTED = (CLUSTER, LISTENER)
SHORT = {CLUSTER: "cds", LISTENER: "lds"}

TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
SNI_CLUSTER = "envoy.filters.network.sni_cluster"

BUILDER_LISTENER = "builders"  # the one listener we serve
TCP_STAT_PREFIX = "builders"
XDS_CLUSTER = "xds_control_plane"  # the bootstrap's static cluster; never a builder SNI
NO_ROUTE_CLUSTER = "no-route.invalid"  # referenced where no builder matches; never exists

ROUTING_MODES = ("filter_chains", "sni_cluster", "on_demand")
