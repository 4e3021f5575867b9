"""The ADS replica's configuration: flags and environment, read in one place."""
from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass

from shared import resources as rs
from shared.config import HelpFormatter, RedisSettings, add_common, env
from shared.connect import parse_url
from shared.errors import ConfigError, RecordError
from shared.model import domain_of


@dataclass(frozen=True, kw_only=True)
class XdsConfig:
    redis: RedisSettings
    redis_read_url: str | None = None  # the builder set and the change stream are read here
    listen: str = "127.0.0.1:18000"
    routing: str = rs.FILTER_CHAINS
    fcds: bool = False  # filter_chains: each builder's chain its own FilterChain resource (delta ADS only)
    listener_port: int = rs.DEFAULT_LISTENER_PORT
    listener_address: str = rs.DEFAULT_LISTENER_ADDRESS
    domain: str = "builders.internal"
    region_scope: str = "all"
    connect_timeout: float = 1.0
    on_demand_wait: float = 5.0
    max_streams: int = 5000
    max_message_bytes: int = 64 * 1024 * 1024
    max_connection_age: float = 0.0
    keepalive_min_ping: float = 10.0
    replica_id: str = ""
    log_format: str = "text"
    log_level: str = "info"
    metrics_listen: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None
    test_nack_builders: frozenset[str] = frozenset()
    require_node_identity: bool = False
    # timings (tests shorten them)
    follow_block_ms: int = 1000  # XREAD BLOCK on the change stream
    follow_backoff: float = 0.5  # first retry after Redis went away (doubles up to 1 s)
    accept_reset_after: float = 30.0  # Redis behind us this long: take its set as a reset
    status_every: float = 1.0  # heartbeat of {xds}:replicas and {xds}:envoys


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xds-server", formatter_class=HelpFormatter,
        description="A stateless ADS replica: follows the builder set in Redis and pushes Envoy "
        "clusters and listeners over gRPC (state-of-the-world and delta).")
    add_common(p)
    p.add_argument("--redis-read-url", default=env("XDS_REDIS_READ_URL"),
                   help="read the builder set and follow the change stream here, e.g. a nearby Redis replica "
                   "(any --redis-url form; redis+sentinel://.../MASTER?role=replica asks the sentinels for one); "
                   "status is still written to --redis-url. Default: --redis-url (env XDS_REDIS_READ_URL)")
    g = p.add_argument_group("serving")
    g.add_argument("--listen", default=env("XDS_LISTEN", "127.0.0.1:18000"), help="gRPC HOST:PORT")
    g.add_argument("--routing", choices=rs.ROUTING_MODES, default=env("XDS_ROUTING", rs.FILTER_CHAINS),
                   help="how Envoy routes SNI to builders (see docs/routing.md)")
    g.add_argument("--fcds", action="store_true", default=env("XDS_FCDS") in ("1", "true", "yes"),
                   help="with --routing filter_chains: serve each builder's chain as its own FilterChain "
                   "resource (FCDS, Envoy 1.40+), so a builder change no longer rebuilds the listener; delta "
                   "ADS only (xdsctl bootstrap --routing filter_chains --fcds) (env XDS_FCDS=1)")
    g.add_argument("--listener-port", type=int, default=int(env("XDS_LISTENER_PORT", str(rs.DEFAULT_LISTENER_PORT))),
                   help="port of the builder listener for Envoys whose bootstrap does not choose one")
    g.add_argument("--listener-address", default=env("XDS_LISTENER_ADDRESS", rs.DEFAULT_LISTENER_ADDRESS),
                   help="address of the builder listener for Envoys whose bootstrap does not choose one")
    g.add_argument("--sni-template", default=env("XDS_SNI_TEMPLATE", "{id}.builders.internal"),
                   help="the discoverer's SNI template; its fixed suffix is the builder domain")
    g.add_argument("--region-scope", choices=("all", "local"), default=env("XDS_REGION_SCOPE", "all"),
                   help="local: each Envoy sees only the builders of its node region")
    g.add_argument("--connect-timeout", type=float, default=1.0, help="seconds for Envoy to connect to a builder")
    g.add_argument("--on-demand-wait", type=float, default=5.0,
                   help="on_demand: seconds a connection may wait for its builder to appear")
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-streams", type=int, default=5000, help="streams beyond this get RESOURCE_EXHAUSTED")
    lim.add_argument("--max-message-mb", type=int, default=64, help="largest gRPC message, in MiB")
    lim.add_argument("--max-connection-age", type=float, default=float(env("XDS_MAX_CONNECTION_AGE", "0")),
                     help="seconds before a connection is asked to reconnect (0: never); gRPC adds jitter")
    lim.add_argument("--keepalive-min-ping", type=float, default=10.0,
                     help="clients pinging more often than this many seconds are disconnected")
    sec = p.add_argument_group("security")
    sec.add_argument("--tls-cert", default=env("XDS_TLS_CERT"), help="serve ADS over TLS with this certificate")
    sec.add_argument("--tls-key", default=env("XDS_TLS_KEY"), help="key of --tls-cert")
    sec.add_argument("--client-ca", default=env("XDS_CLIENT_CA"), help="require client certificates from this CA")
    sec.add_argument("--require-node-identity", action="store_true",
                     help="with --client-ca: a stream's node id must be a name in its client certificate "
                     "(CN or SAN), so a proxy cannot ask for another node's identity")
    p.add_argument("--test-nack-builder", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--replica-id", default=env("XDS_REPLICA_ID"), help="id in {xds}:replicas (default host:pid)")
    return p


def from_args(argv: list[str] | None = None) -> XdsConfig:
    a = parser().parse_args(argv)
    try:
        domain = domain_of(a.sni_template)
    except RecordError as exc:
        raise ConfigError(f"bad --sni-template: {exc}") from exc
    if bool(a.tls_cert) != bool(a.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if a.client_ca and not a.tls_cert:
        raise ConfigError("--client-ca needs --tls-cert and --tls-key")
    if a.fcds and a.routing not in rs.FCDS_MODES:
        raise ConfigError(f"--fcds serves the chains of --routing {' or '.join(rs.FCDS_MODES)}, not {a.routing}")
    if a.require_node_identity and not a.client_ca:
        raise ConfigError("--require-node-identity needs --client-ca (client certificates)")
    read_url = a.redis_read_url or None
    if read_url:
        parse_url(read_url)  # a bad URL is exit code 2 now, not a retry loop later
    return XdsConfig(
        redis=RedisSettings.from_args(a), redis_read_url=read_url, listen=a.listen, routing=a.routing, fcds=a.fcds,
        listener_port=a.listener_port,
        listener_address=a.listener_address, domain=domain, region_scope=a.region_scope,
        connect_timeout=a.connect_timeout, on_demand_wait=a.on_demand_wait, max_streams=a.max_streams,
        max_message_bytes=a.max_message_mb * 1024 * 1024, max_connection_age=a.max_connection_age,
        keepalive_min_ping=a.keepalive_min_ping,
        replica_id=a.replica_id or f"{socket.gethostname()}:{os.getpid()}",
        log_format=a.log_format, log_level=a.log_level, metrics_listen=a.metrics_listen,
        tls_cert=a.tls_cert, tls_key=a.tls_key, client_ca=a.client_ca,
        test_nack_builders=frozenset(a.test_nack_builder), require_node_identity=a.require_node_identity)
