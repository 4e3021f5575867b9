"""gRPC wiring: the ADS, CDS and LDS services, health, reflection and limits.

The handlers take pre-serialized bytes from the transports and send them as
they are (no response serializer): every push is bytes serialized once.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import grpc
from envoy.service.cluster.v3 import cds_pb2  # noqa: F401  (registers the service descriptors)
from envoy.service.discovery.v3 import ads_pb2, discovery_pb2  # noqa: F401
from envoy.service.listener.v3 import lds_pb2  # noqa: F401
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shared import resources as rs
from shared import supervise
from shared.errors import StreamRefused
from shared.errors import ConfigError

from . import metrics
from .cache import Cache
from .config import XdsConfig
from .delta import DeltaStream
from .peers import Registry
from .sotw import SotwStream
from .stream import WriteBudget

log = logging.getLogger(__name__)

ADS = "envoy.service.discovery.v3.AggregatedDiscoveryService"
CDS = "envoy.service.cluster.v3.ClusterDiscoveryService"
LDS = "envoy.service.listener.v3.ListenerDiscoveryService"
# service -> {method: (delta?, types, ordered)}
METHODS = {
    ADS: {"StreamAggregatedResources": (False, rs.SUPPORTED, True),
          "DeltaAggregatedResources": (True, rs.SUPPORTED, True)},
    CDS: {"StreamClusters": (False, (rs.CLUSTER,), False), "DeltaClusters": (True, (rs.CLUSTER,), False)},
    LDS: {"StreamListeners": (False, (rs.LISTENER,), False), "DeltaListeners": (True, (rs.LISTENER,), False)},
}


def peer_identities(context: grpc.aio.ServicerContext) -> frozenset[str]:
    """Names in the client certificate (CN and SANs); empty without one."""
    auth = context.auth_context()
    names = [*auth.get("x509_common_name", []), *auth.get("x509_subject_alternative_name", [])]
    return frozenset(n.decode() if isinstance(n, bytes) else n for n in names)


class XdsService:
    """Opens one transport per stream, within the stream limit."""

    def __init__(self, cache: Cache, registry: Registry, cfg: XdsConfig):
        self.cache = cache
        self.registry = registry
        self.cfg = cfg
        self.open = 0
        self.budget = WriteBudget()  # large responses in flight at once, across all streams

    def handler(self, delta: bool, types: tuple[str, ...], ordered: bool):
        async def handle(requests, context: grpc.aio.ServicerContext) -> None:
            if self.open >= self.cfg.max_streams:
                await self._shed(context)
            identities = peer_identities(context) if self.cfg.require_node_identity else None
            if delta:
                stream = DeltaStream(self.cache, self.registry, types, identities, self.budget, ordered=ordered,
                                     wait=self.cfg.on_demand_wait)
            else:
                stream = SotwStream(self.cache, self.registry, types, identities, self.budget, ordered=ordered)
            self.open += 1
            try:
                await stream.serve(context.read, context.write, grpc.aio.EOF)
            except* StreamRefused as group:  # raised inside the stream's TaskGroup
                exc = group.exceptions[0]
                metrics.STREAMS_REFUSED.inc()
                log.warning("stream refused: %s", exc)
                await context.abort(getattr(grpc.StatusCode, exc.code), str(exc))
            except* Exception as group:  # a bug in this stream: it ends this stream, never the server
                await self._crashed(stream, group, context)
            finally:
                self.open -= 1

        return handle

    async def _shed(self, context: grpc.aio.ServicerContext) -> None:
        """Refuse a stream over --max-streams with RESOURCE_EXHAUSTED. The client's first request is read
        first (for at most a second): aborting while that write is in flight makes the client see INTERNAL
        instead of the reason, and an Envoy logs nothing useful."""
        metrics.STREAMS_REFUSED.inc()
        with contextlib.suppress(TimeoutError, grpc.aio.AioRpcError, grpc.aio.UsageError):
            async with asyncio.timeout(1.0):
                await context.read()
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"this replica serves at most {self.cfg.max_streams} streams; try another")

    @staticmethod
    async def _crashed(stream, exc: BaseException, context: grpc.aio.ServicerContext) -> None:
        """End one stream that raised something unplanned: counted, logged once per cause, INTERNAL.

        Left alone, grpc.aio would log it on every stream and answer UNKNOWN; here it is counted
        (``xds_loop_crashes_total{loop="stream"}``) and the Envoy is told to reconnect."""
        if context.done():  # the client went away first; writing to it failed: nothing to report
            return
        node = stream.peer.node_id if stream.peer is not None else "a node not yet known"
        supervise.report_crash("stream", exc, metrics.LOOP_CRASHES,
                               f"ending the stream of {node} with INTERNAL (it reconnects); other streams go on")
        await context.abort(grpc.StatusCode.INTERNAL, "internal error in this xDS replica; reconnect")

    def generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        out = []
        for service, methods in METHODS.items():
            table = {}
            for name, (delta, types, ordered) in methods.items():
                request = discovery_pb2.DeltaDiscoveryRequest if delta else discovery_pb2.DiscoveryRequest
                table[name] = grpc.stream_stream_rpc_method_handler(
                    self.handler(delta, types, ordered), request_deserializer=request.FromString,
                    response_serializer=None)
            out.append(grpc.method_handlers_generic_handler(service, table))
        return out


def server_options(cfg: XdsConfig) -> list[tuple[str, int]]:
    opts = [
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", int(cfg.keepalive_min_ping * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        # a burst of new streams (a region of Envoys reconnecting) is queued, not refused by gRPC itself;
        # --max-streams decides what is shed, with RESOURCE_EXHAUSTED
        ("grpc.server.max_pending_requests", max(1000, 2 * cfg.max_streams)),
        ("grpc.server.max_pending_requests_hard_limit", max(3000, 4 * cfg.max_streams)),
        # gRPC sets SO_REUSEPORT by default, so a second replica could bind the same port and split the
        # fleet: only the workers of one supervisor share a port (xds_server.workers)
        ("grpc.so_reuseport", 1 if cfg.worker_of else 0),
    ]
    if cfg.max_connection_age > 0:
        opts += [("grpc.max_connection_age_ms", int(cfg.max_connection_age * 1000)),
                 ("grpc.max_connection_age_grace_ms", 5_000)]
    return opts


def credentials(cfg: XdsConfig) -> grpc.ServerCredentials | None:
    if not cfg.tls_cert:
        return None
    pair = [(Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes())]
    if cfg.client_ca:
        return grpc.ssl_server_credentials(pair, root_certificates=Path(cfg.client_ca).read_bytes(),
                                           require_client_auth=True)
    return grpc.ssl_server_credentials(pair)


def build(cache: Cache, registry: Registry, cfg: XdsConfig) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    server = grpc.aio.server(options=server_options(cfg))
    service = XdsService(cache, registry, cfg)
    server.add_generic_rpc_handlers(service.generic_handlers())
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (ADS, CDS, LDS, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    creds = credentials(cfg)
    try:
        port = server.add_secure_port(cfg.listen, creds) if creds else server.add_insecure_port(cfg.listen)
    except RuntimeError as exc:  # grpc's word for "cannot bind"
        raise ConfigError(f"--listen: cannot listen on {cfg.listen} ({str(exc).split(';')[0]})") from exc
    return server, health_servicer, port


async def set_health(servicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", ADS, CDS, LDS):
        await servicer.set(name, status)
