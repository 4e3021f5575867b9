"""A real gRPC xDS client for tests: SotW and delta, over ADS or the per-type services.

It speaks the wire protocol the way Envoy does (node on the first message,
ACK = version_info + response_nonce, NACK = the same plus error_detail) and
also lets a test misbehave on purpose (stale nonces, no ACK, unknown types).
Every wait is bounded: ``recv()`` raises TimeoutError, ``expect_silence()``
fails when something arrives. A client given its in-process ``server`` (the
replica) makes ``expect_silence()`` prove first that the server could have
answered: it has handled every request sent so far, holds no paced version
back, and everything it queued for the node has arrived (``Peer.handled``,
``Peer.queued``). A slow server cannot pass it vacuously.

    async with XdsClient(address, node_id="e1", region="ord") as client:
        ads = await client.sotw()
        await ads.request(CDS)
        resp = await ads.recv(CDS)
        await ads.ack(resp)
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from shared import resources as rs
from harness.wait import async_wait_until

CDS, LDS, FCDS = rs.CLUSTER, rs.LISTENER, rs.FILTER_CHAIN
MESSAGES = {CDS: cluster_pb2.Cluster, LDS: listener_pb2.Listener, FCDS: listener_components_pb2.FilterChain}

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
SERVICES = {
    # (service, delta?) -> method path
    ("ads", False): ADS + "StreamAggregatedResources",
    ("ads", True): ADS + "DeltaAggregatedResources",
    ("cds", False): "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters",
    ("cds", True): "/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters",
    ("lds", False): "/envoy.service.listener.v3.ListenerDiscoveryService/StreamListeners",
    ("lds", True): "/envoy.service.listener.v3.ListenerDiscoveryService/DeltaListeners",
}
RECV_TIMEOUT = 3.0


def decode(type_url: str, any_msg) -> object:
    assert any_msg.type_url == type_url, f"resource of type {any_msg.type_url}, expected {type_url}"
    return MESSAGES[type_url].FromString(any_msg.value)


@dataclass
class StreamEnd:
    """What the reader saw when the stream ended."""

    code: grpc.StatusCode | None
    details: str = ""


class _Stream:
    """One bidirectional stream; a background task queues every response."""

    request_type: type
    response_type: type
    transport: str  # as the server's Peer.transport

    def __init__(self, channel: grpc.aio.Channel, method: str, node: base_pb2.Node, *, node_every_time: bool,
                 client: "XdsClient | None" = None):
        self.node = node
        self.client = client
        self.node_every_time = node_every_time
        self._sent_node = False
        self.call = channel.stream_stream(
            method, request_serializer=self.request_type.SerializeToString,
            response_deserializer=self.response_type.FromString)()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.end: StreamEnd | None = None
        self.received = 0
        self.sent = 0
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.call.read()
                if msg is grpc.aio.EOF:
                    break
                self.received += 1
                self.queue.put_nowait(msg)
            self.end = StreamEnd(await self.call.code(), await self.call.details())
        except grpc.aio.AioRpcError as exc:
            self.end = StreamEnd(exc.code(), exc.details() or "")
        except asyncio.CancelledError:
            self.end = StreamEnd(grpc.StatusCode.CANCELLED, "closed by the test")
            raise
        finally:
            self.queue.put_nowait(self.end or StreamEnd(None, "reader failed"))

    async def send(self, request) -> None:
        if self.node_every_time or not self._sent_node:
            request.node.CopyFrom(self.node)
            self._sent_node = True
        await asyncio.wait_for(self.call.write(request), RECV_TIMEOUT)
        self.sent += 1

    async def recv_any(self, timeout: float = RECV_TIMEOUT):
        """The next response; TimeoutError after ``timeout``, ConnectionError when the stream ended."""
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            raise TimeoutError(f"no response within {timeout:.1f}s") from None
        if isinstance(item, StreamEnd):
            self.queue.put_nowait(item)  # every later recv sees the end too
            raise ConnectionError(f"stream ended: {item.code} {item.details}")
        return item

    async def recv(self, type_url: str | None = None, timeout: float = RECV_TIMEOUT):
        resp = await self.recv_any(timeout)
        if type_url is not None:
            assert resp.type_url == type_url, f"got a {rs.SHORT.get(resp.type_url, resp.type_url)} response, " \
                                              f"expected {rs.SHORT[type_url]}: {self.describe(resp)}"
        return resp

    async def expect_silence(self, within: float = 0.4, *, caught_up: bool = True) -> None:
        """Fail when any response arrives within ``within`` seconds (after ``settled()`` when the server is known)."""
        if self.client is not None and self.client.server is not None:
            await self.settled(caught_up=caught_up)
        try:
            resp = await self.recv_any(within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected response: {self.describe(resp)}")

    async def settled(self, timeout: float = RECV_TIMEOUT, *, caught_up: bool = True) -> None:
        """Wait until the server has handled every request this node's open streams of this transport sent,
        serves the version its Redis holds (unless not ``caught_up``: a test that holds it back), releases
        no held version, and all it queued for them has arrived."""
        server, node_id = self.client.server, self.node.id or "unknown"

        async def quiet():
            if caught_up and server.cache.version != await server.follower.store.version():
                return False
            peers = [p for p in server.registry.peers if p.node_id == node_id and p.transport == self.transport]
            mine = [s for s in self.client.streams if s.transport == self.transport and s.sent and s.end is None]
            counts = (len(peers), sum(p.handled for p in peers), sum(p.queued for p in peers))
            return not server.cache.held and counts == (len(mine), sum(s.sent for s in mine),
                                                        sum(s.received for s in mine))
        await async_wait_until(quiet, timeout, interval=0.01,
                               what=f"the server handled {node_id}'s requests and its responses arrived")

    async def wait_end(self, timeout: float = RECV_TIMEOUT) -> StreamEnd:
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            raise TimeoutError(f"stream still open after {timeout:.1f}s") from None
        if not isinstance(item, StreamEnd):
            raise AssertionError(f"expected the stream to end, got {self.describe(item)}")
        return item

    def describe(self, resp) -> str:
        raise NotImplementedError

    async def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@dataclass
class _SotwType:
    names: list[str] = field(default_factory=list)
    version: str = ""  # last ACKed version_info
    nonce: str = ""  # nonce of the last response received


class SotwStream(_Stream):
    """State of the world: every request carries the full subscription of its type."""

    request_type = discovery_pb2.DiscoveryRequest
    response_type = discovery_pb2.DiscoveryResponse
    transport = "sotw"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.types: dict[str, _SotwType] = {}

    def _state(self, type_url: str) -> _SotwType:
        return self.types.setdefault(type_url, _SotwType())

    async def request(self, type_url: str, names: Iterable[str] = (), *, version_info: str | None = None,
                      nonce: str | None = None, error: str | None = None) -> None:
        """A raw request; unset fields default to what this client last ACKed for the type."""
        st = self._state(type_url)
        st.names = list(names)
        req = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=st.names,
            version_info=st.version if version_info is None else version_info,
            response_nonce=st.nonce if nonce is None else nonce)
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=error))
        await self.send(req)

    async def recv(self, type_url: str | None = None, timeout: float = RECV_TIMEOUT):
        resp = await super().recv(type_url, timeout)
        self._state(resp.type_url).nonce = resp.nonce
        return resp

    async def ack(self, resp, names: Iterable[str] | None = None) -> None:
        st = self._state(resp.type_url)
        st.version = resp.version_info
        await self.request(resp.type_url, st.names if names is None else names,
                           version_info=resp.version_info, nonce=resp.nonce)

    async def nack(self, resp, detail: str = "rejected by the test") -> None:
        """Like Envoy: version_info stays the last accepted one, the nonce is the rejected response's."""
        st = self._state(resp.type_url)
        await self.request(resp.type_url, st.names, version_info=st.version, nonce=resp.nonce, error=detail)

    @staticmethod
    def resources(resp) -> dict[str, object]:
        out = {}
        for any_msg in resp.resources:
            msg = decode(resp.type_url, any_msg)
            out[msg.name] = msg
        return out

    @staticmethod
    def names(resp) -> list[str]:
        return [decode(resp.type_url, a).name for a in resp.resources]

    def describe(self, resp) -> str:
        return (f"{rs.SHORT.get(resp.type_url, resp.type_url)} version {resp.version_info!r} "
                f"nonce {resp.nonce!r} names {sorted(self.names(resp))}")


class DeltaStream(_Stream):
    """Incremental xDS: subscriptions change by difference; resources carry their own versions."""

    request_type = discovery_pb2.DeltaDiscoveryRequest
    response_type = discovery_pb2.DeltaDiscoveryResponse
    transport = "delta"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.nonces: dict[str, str] = {}
        self.have: dict[str, dict[str, str]] = {}  # type -> name -> version, as Envoy tracks them

    async def request(self, type_url: str, subscribe: Iterable[str] = (), unsubscribe: Iterable[str] = (), *,
                      initial: Mapping[str, str] | None = None, nonce: str = "", error: str | None = None) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe), response_nonce=nonce)
        for name, version in (initial or {}).items():
            req.initial_resource_versions[name] = version
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=error))
        await self.send(req)

    async def recv(self, type_url: str | None = None, timeout: float = RECV_TIMEOUT):
        resp = await super().recv(type_url, timeout)
        self.nonces[resp.type_url] = resp.nonce
        return resp

    async def ack(self, resp, subscribe: Iterable[str] = (), unsubscribe: Iterable[str] = ()) -> None:
        have = self.have.setdefault(resp.type_url, {})
        for r in resp.resources:
            have[r.name] = r.version
        for name in resp.removed_resources:
            have.pop(name, None)
        await self.request(resp.type_url, subscribe, unsubscribe, nonce=resp.nonce)

    async def nack(self, resp, detail: str = "rejected by the test") -> None:
        await self.request(resp.type_url, nonce=resp.nonce, error=detail)

    @staticmethod
    def resources(resp) -> dict[str, object]:
        out = {}
        for r in resp.resources:
            msg = decode(resp.type_url, r.resource)
            assert msg.name == r.name, f"Resource.name {r.name!r} wraps {msg.name!r}"
            out[r.name] = msg
        return out

    @staticmethod
    def versions(resp) -> dict[str, str]:
        return {r.name: r.version for r in resp.resources}

    def describe(self, resp) -> str:
        return (f"{rs.SHORT.get(resp.type_url, resp.type_url)} version {resp.system_version_info!r} "
                f"nonce {resp.nonce!r} updated {sorted(r.name for r in resp.resources)} "
                f"removed {sorted(resp.removed_resources)}")


def make_node(node_id: str, region: str = "", *, listener_port: str | None = None,
              listener_address: str | None = None, metadata: Mapping[str, str] | None = None) -> base_pb2.Node:
    """A Node like our bootstrap writes: locality.region and string metadata."""
    node = base_pb2.Node(id=node_id, cluster="builder-proxies")
    if region:
        node.locality.region = region
    fields = dict(metadata or {})
    if listener_port is not None:
        fields["listener_port"] = listener_port
    if listener_address is not None:
        fields["listener_address"] = listener_address
    for key, value in fields.items():
        node.metadata.fields[key].CopyFrom(struct_pb2.Value(string_value=value))
    return node


class XdsClient:
    """One gRPC channel to an ADS server; opens any number of streams on it."""

    def __init__(self, address: str, node_id: str = "envoy-test", region: str = "", *,
                 listener_port: str | None = "10443", listener_address: str | None = "127.0.0.1",
                 metadata: Mapping[str, str] | None = None, node_every_time: bool = False,
                 channel: grpc.aio.Channel | None = None, server=None):
        self.address = address
        self.server = server  # the in-process replica (registry, cache): expect_silence proves it settled
        self.node = make_node(node_id, region, listener_port=listener_port,
                              listener_address=listener_address, metadata=metadata)
        self.node_every_time = node_every_time
        self.channel = channel or grpc.aio.insecure_channel(address)
        self.streams: list[_Stream] = []

    async def sotw(self, service: str = "ads") -> SotwStream:
        return self._open(SotwStream, SERVICES[(service, False)])

    async def delta(self, service: str = "ads") -> DeltaStream:
        return self._open(DeltaStream, SERVICES[(service, True)])

    def _open(self, cls, method: str):
        stream = cls(self.channel, method, self.node, node_every_time=self.node_every_time, client=self)
        self.streams.append(stream)
        return stream

    async def close(self) -> None:
        for stream in self.streams:
            await stream.close()
        self.streams.clear()
        await self.channel.close(grace=None)

    async def __aenter__(self) -> "XdsClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
