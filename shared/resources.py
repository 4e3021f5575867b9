"""Envoy type URLs and the names of filters and static resources. No other module spells them."""
from __future__ import annotations

TYPE_PREFIX = "type.googleapis.com/"
CLUSTER = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
LISTENER = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
FILTER_CHAIN = TYPE_PREFIX + "envoy.config.listener.v3.FilterChain"  # FCDS: one chain per resource
SUPPORTED = (CLUSTER, FILTER_CHAIN, LISTENER)  # every type an ADS stream may ask for; a replica serves a subset
SHORT = {CLUSTER: "cds", FILTER_CHAIN: "fcds", LISTENER: "lds"}

TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
SNI_CLUSTER = "envoy.filters.network.sni_cluster"
# FCDS: the listener's filter_chain_matcher maps the SNI (ServerNameInput) to a chain name (a StringValue action)
SERVER_NAME_INPUT = "envoy.matching.inputs.server_name"
CHAIN_NAME_ACTION = "chain"
FCDS_STUB_CHAIN = "fcds-stub"  # the listener's one inline chain, never named by the matcher (see render.py)

BUILDER_LISTENER = "builders"  # the one listener we serve
TCP_STAT_PREFIX = "builders"
XDS_CLUSTER = "xds_control_plane"  # the bootstrap's static cluster; never a builder SNI
NO_ROUTE_CLUSTER = "no-route.invalid"  # referenced where no builder matches; never exists

# Routing modes (docs/routing.md): the xds-server's --routing and the bootstrap's --routing.
FILTER_CHAINS = "filter_chains"  # one filter chain per builder SNI in the listener
SNI_CLUSTERS = "sni_cluster"  # one wildcard chain; the sni_cluster filter picks the cluster by SNI
ON_DEMAND = "on_demand"  # like sni_cluster; Envoy asks for each cluster when a connection needs it
ROUTING_MODES = (FILTER_CHAINS, SNI_CLUSTERS, ON_DEMAND)
# filter_chains over FCDS (xds-server --routing filter_chains --fcds): the modes that FCDS can serve, and
# what the bootstrap's node metadata says for it (META_ROUTING), since it is not a --routing of its own
FCDS_MODES = (FILTER_CHAINS,)
FILTER_CHAINS_FCDS = "filter_chains+fcds"


def routing_name(mode: str, fcds: bool) -> str:
    """The routing a bootstrap asks for in META_ROUTING, and a replica serves: its mode, or FILTER_CHAINS_FCDS."""
    return FILTER_CHAINS_FCDS if fcds else mode

# Region scopes (the xds-server's --region-scope): every builder to every Envoy, or to each Envoy those of its region.
SCOPE_ALL = "all"
SCOPE_LOCAL = "local"
REGION_SCOPES = (SCOPE_ALL, SCOPE_LOCAL)

# Where the ADS replicas listen (xds-server --listen) and Envoys find them (xdsctl bootstrap --ads), by default.
DEFAULT_ADS = "127.0.0.1:18000"

# The builder listener's default port, when an Envoy's bootstrap does not choose one.
DEFAULT_LISTENER_PORT = 10443
DEFAULT_LISTENER_ADDRESS = "0.0.0.0"

# Node metadata the bootstrap writes and the ADS server reads: one contract, both sides.
META_LISTENER_PORT = "listener_port"
META_LISTENER_ADDRESS = "listener_address"
META_REGION = "region"
META_ROUTING = "routing"


# A transitional snapshot's version_info is the set version and a label: "12-bridge" (xds_server/sotw.py).
BRIDGE = "bridge"


def version_info(version: int, label: str = "") -> str:
    """What an xDS response carries as version_info: "12", or "12-bridge" with a label."""
    return f"{version}-{label}" if label else str(version)


def version_label(version_info: str | int | None) -> str:
    """The label of a version_info ("bridge" in "12-bridge"); "" for a plain version."""
    return str(version_info).partition("-")[2]


def version_number(version_info: str | int | None) -> int:
    """The set version in an xDS version_info ("12", or "12-bridge" for a transitional snapshot); 0 if none.
    A plain number stays as it is (-1: a replica that has loaded nothing yet)."""
    try:
        return int(version_info)
    except (TypeError, ValueError):
        pass
    try:
        return int(str(version_info).split("-", 1)[0])
    except ValueError:
        return 0
