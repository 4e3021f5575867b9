"""The ADS replica's configuration: flags and environment, read in one place."""
from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass

from shared import resources as rs
from shared.config import (Parser, RedisSettings, add_common, checker, defaults, existing_file, flag, hostport,
                           ip_address, non_empty, port, positive_int, redis_url, seconds, seconds_or_zero, sni_template)
from shared.errors import ConfigError
from shared.model import DEFAULT_DOMAIN, DEFAULT_SNI_TEMPLATE, domain_of

from . import workers as _workers


MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class XdsConfig:
    redis: RedisSettings
    redis_read_url: str | None = None  # the builder set and the change stream are read here
    listen: str = rs.DEFAULT_ADS
    routing: str = rs.FILTER_CHAINS
    fcds: bool = False  # filter_chains: each builder's chain its own FilterChain resource (delta ADS only)
    listener_port: int = rs.DEFAULT_LISTENER_PORT
    listener_address: str = rs.DEFAULT_LISTENER_ADDRESS
    domain: str = DEFAULT_DOMAIN
    region_scope: str = rs.SCOPE_ALL
    connect_timeout: float = 1.0
    connect_attempts: int = 20
    connect_backoff: float = 0.05
    connect_backoff_max: float = 0.2
    on_demand_wait: float = 5.0
    push_interval: float = 0.1
    max_streams: int = 5000
    max_message_bytes: int = 64 * MIB
    max_connection_age: float = 0.0
    keepalive_min_ping: float = 10.0
    replica_id: str = ""
    region: str | None = None  # the region this replica runs in (status and xdsctl explain group by it)
    workers: int = 1  # --workers: replica processes sharing --listen (a supervisor starts them)
    worker_of: str | None = None  # in a worker: "<host>:<supervisor pid>"; it shares the port on purpose
    worker_index: int = 0
    log_format: str = "text"
    log_level: str = "info"
    metrics_listen: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None
    poison: frozenset[str] = frozenset()  # --poison: a test and drill hook, never for production
    require_node_identity: bool = False
    # timings (tests shorten them)
    follow_block_ms: int = 1000  # XREAD BLOCK on the change stream
    follow_backoff: float = 0.5  # first retry after Redis went away (doubles up to 1 s)
    accept_reset_after: float = 30.0  # Redis behind us this long: take its set as a reset
    status_every: float = 1.0  # heartbeat of {xds}:replicas and {xds}:envoys


D = defaults(XdsConfig)  # the flags' defaults


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="xds-server",
        description="A stateless ADS replica: follows the builder set in Redis and pushes Envoy "
        "clusters and listeners over gRPC (state-of-the-world and delta).")
    add_common(p)
    flag(p, "--redis-read-url", env="XDS_REDIS_READ_URL", type=redis_url,
         help="read the builder set and follow the change stream here, e.g. a nearby Redis replica "
         "(any --redis-url form; redis+sentinel://.../MASTER?role=replica asks the sentinels for one); "
         "status is still written to --redis-url", shown="--redis-url")
    flag(p, "--accept-reset-after", env="XDS_ACCEPT_RESET_AFTER", default=D.accept_reset_after, type=seconds,
         help="seconds Redis may stay behind the version this replica serves before its set is taken as a "
         "reset (Redis and every discoverer lost their state); with --redis-read-url only once the primary "
         "is behind too")
    add_serving(p.add_argument_group("serving"))
    add_limits(p.add_argument_group("limits"))
    add_security(p.add_argument_group("security"))
    p.add_argument("--poison", action="append", default=[], metavar="BUILDER_ID",
                   help="TEST AND DRILL ONLY: render this builder's cluster so that Envoy rejects it (NACK), "
                   "to show what a rejected config looks like; repeatable")
    flag(p, "--replica-id", env="XDS_REPLICA_ID", type=non_empty, shown="HOST:PID",
         help="id in {xds}:replicas (with --workers, ID/<worker index>)")
    flag(p, "--region", env="XDS_REGION", type=non_empty, shown="$FLY_REGION",
         help="the region this replica runs in, shown in {xds}:replicas (on Fly: FLY_REGION)")
    flag(p, "--workers", env="XDS_WORKERS", default=D.workers, type=workers_arg,
         help="replica processes sharing --listen (SO_REUSEPORT), each complete and stateless; "
         "'auto': one per core this process may use. A worker that dies is started again "
         "(with --metrics-listen HOST:PORT, worker i serves metrics on PORT+i)")
    return p


def add_serving(g) -> None:
    flag(g, "--listen", env="XDS_LISTEN", default=D.listen, type=hostport(), help="gRPC HOST:PORT")
    flag(g, "--routing", env="XDS_ROUTING", default=D.routing, choices=rs.ROUTING_MODES,
         help="how Envoy routes SNI to builders (see docs/routing.md)")
    flag(g, "--fcds", env="XDS_FCDS", action="store_true",
         help="with --routing filter_chains: serve each builder's chain as its own FilterChain "
         "resource (FCDS, Envoy 1.40+), so a builder change no longer rebuilds the listener; delta "
         "ADS only (xdsctl bootstrap --routing filter_chains --fcds)")
    flag(g, "--listener-port", env="XDS_LISTENER_PORT", default=D.listener_port, type=port,
         help="port of the builder listener for Envoys whose bootstrap does not choose one "
         "(xdsctl bootstrap --listener-port chooses)")
    flag(g, "--listener-address", env="XDS_LISTENER_ADDRESS", default=D.listener_address, type=ip_address,
         help="address of the builder listener for Envoys whose bootstrap does not choose one")
    flag(g, "--sni-template", env="XDS_SNI_TEMPLATE", default=DEFAULT_SNI_TEMPLATE, type=sni_template,
         help="the discoverer's SNI template; its fixed suffix is the builder domain")
    flag(g, "--region-scope", env="XDS_REGION_SCOPE", default=D.region_scope, choices=rs.REGION_SCOPES,
         help="local: each Envoy sees only the builders of its node region")
    flag(g, "--connect-timeout", env="XDS_CONNECT_TIMEOUT", default=D.connect_timeout, type=seconds,
         help="seconds for Envoy to connect to a builder")
    flag(g, "--connect-attempts", env="XDS_CONNECT_ATTEMPTS", default=D.connect_attempts, type=positive_int,
         help="attempts Envoy makes to connect to a builder before it gives up on a client connection "
         "(with jittered exponential backoff): a route can be live before the builder listens")
    flag(g, "--connect-backoff", env="XDS_CONNECT_BACKOFF", default=D.connect_backoff, type=seconds,
         help="seconds: the first backoff between connect attempts is random in [0, this)")
    flag(g, "--connect-backoff-max", env="XDS_CONNECT_BACKOFF_MAX", default=D.connect_backoff_max, type=seconds,
         help="seconds: backoffs double up to random in [0, this)")
    flag(g, "--on-demand-wait", env="XDS_ON_DEMAND_WAIT", default=D.on_demand_wait, type=seconds,
         help="on_demand: seconds a connection may wait for its builder to appear")
    flag(g, "--push-interval", env="XDS_PUSH_INTERVAL", default=D.push_interval, type=seconds_or_zero,
         help="seconds between two pushes of new versions: a version after a quiet moment goes out at "
         "once, the ones that follow within this interval go out together when it has passed "
         "(under churn each Envoy gets at most one response per type per interval; 0: no pacing)")


def add_limits(lim) -> None:
    flag(lim, "--max-streams", env="XDS_MAX_STREAMS", default=D.max_streams, type=positive_int,
         help="streams beyond this get RESOURCE_EXHAUSTED")
    flag(lim, "--max-message-mb", env="XDS_MAX_MESSAGE_MB", default=D.max_message_bytes // MIB, type=positive_int,
         help="largest gRPC message, in MiB")
    flag(lim, "--max-connection-age", env="XDS_MAX_CONNECTION_AGE", default=D.max_connection_age, type=seconds_or_zero,
         help="seconds before a connection is asked to reconnect (0: never); gRPC adds jitter")
    flag(lim, "--keepalive-min-ping", env="XDS_KEEPALIVE_MIN_PING", default=D.keepalive_min_ping, type=seconds,
         help="clients pinging more often than this many seconds are disconnected")


def add_security(sec) -> None:
    flag(sec, "--tls-cert", env="XDS_TLS_CERT", type=existing_file,
         help="serve ADS over TLS with this certificate (PEM; with --tls-key)")
    flag(sec, "--tls-key", env="XDS_TLS_KEY", type=existing_file, help="key of --tls-cert (PEM)")
    flag(sec, "--client-ca", env="XDS_CLIENT_CA", type=existing_file,
         help="require client certificates from this CA (needs --tls-cert)")
    flag(sec, "--require-node-identity", env="XDS_REQUIRE_NODE_IDENTITY", action="store_true",
         help="with --client-ca: a stream's node id must be a name in its client certificate "
         "(CN or SAN), so a proxy cannot ask for another node's identity")


@checker("a number of workers 1 or more, or 'auto' (one per core)", "N|auto")
def workers_arg(value: str) -> int:
    if str(value) == "auto":
        return _workers.available_cores()
    count = int(value)
    if count < 1:
        raise ValueError("fewer than one worker")
    return count


def from_args(argv: list[str] | None = None) -> XdsConfig:
    a = parser().parse_args(argv)
    domain = domain_of(a.sni_template)
    if bool(a.tls_cert) != bool(a.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if a.client_ca and not a.tls_cert:
        raise ConfigError("--client-ca needs --tls-cert and --tls-key")
    if a.fcds and a.routing not in rs.FCDS_MODES:
        raise ConfigError(f"--fcds serves the chains of --routing {' or '.join(rs.FCDS_MODES)}, not {a.routing}")
    if a.require_node_identity and not a.client_ca:
        raise ConfigError("--require-node-identity needs --client-ca (client certificates)")
    if a.connect_backoff < 0.001 or a.connect_backoff_max < a.connect_backoff:
        raise ConfigError("--connect-backoff must be >= 0.001 s and --connect-backoff-max >= --connect-backoff")
    read_url = a.redis_read_url or None
    worker = _workers.worker_of()
    replica_id = a.replica_id or f"{socket.gethostname()}:{os.getpid()}"
    if worker is not None and a.replica_id:
        replica_id = f"{a.replica_id}/{worker[1]}"
    return XdsConfig(
        redis=RedisSettings.from_args(a), redis_read_url=read_url, listen=a.listen, routing=a.routing, fcds=a.fcds,
        listener_port=a.listener_port,
        listener_address=a.listener_address, domain=domain, region_scope=a.region_scope,
        connect_timeout=a.connect_timeout, connect_attempts=a.connect_attempts, connect_backoff=a.connect_backoff,
        connect_backoff_max=a.connect_backoff_max, on_demand_wait=a.on_demand_wait,
        push_interval=a.push_interval, max_streams=a.max_streams,
        max_message_bytes=a.max_message_mb * MIB, max_connection_age=a.max_connection_age,
        keepalive_min_ping=a.keepalive_min_ping,
        replica_id=replica_id, region=a.region or os.environ.get("FLY_REGION") or None, workers=a.workers, worker_of=worker[0] if worker else None,
        worker_index=worker[1] if worker else 0,
        log_format=a.log_format, log_level=a.log_level, metrics_listen=a.metrics_listen,
        tls_cert=a.tls_cert, tls_key=a.tls_key, client_ca=a.client_ca,
        poison=frozenset(a.poison), require_node_identity=a.require_node_identity,
        accept_reset_after=a.accept_reset_after)
