"""The floor under the replica's CPU per push: a grpc.aio ADS server that does nothing else.

    python -m bench.grpc_floor --listen 127.0.0.1:PORT

Serves StreamAggregatedResources and DeltaAggregatedResources well enough for
bench/loadclient.py: answers the first CDS and LDS request of a stream, then
on every SIGUSR1 writes one CDS response with the next version to every
stream, and reads (and decodes) every ACK, the way the replica does: one
reader task per stream, the handler's task writing, one shared future per
version, the replica's GC settings. No cache, no state, no metrics, no
status: what one push and its ACK cost in grpc.aio and the event loop alone
(responses without resources, ~100 bytes; the replica's delta response to a
one-builder change is ~280). ``--sotw-bytes N``: each SotW CDS push carries N
bytes of resources (one padded cluster), as many as the replica's SotW CDS
response, so the floor of a SotW push includes moving its bytes through
grpc.aio. ``bench.bench_cpu --floor`` measures it.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import signal

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from shared import resources as rs
from xds_server import wire
from xds_server.main import tune_gc
from xds_server.server import ADS
from xds_server.snapshot import F_NONCE, F_TYPE_URL, F_VERSION_INFO


class Versions:
    def __init__(self):
        self.number = 1
        self.next: asyncio.Future = asyncio.get_running_loop().create_future()

    def bump(self) -> None:
        self.number += 1
        done, self.next = self.next, asyncio.get_running_loop().create_future()
        done.set_result(None)


@functools.lru_cache(maxsize=8)
def response(version: int, type_url: str, nonce: int, resources: bytes = b"") -> bytes:
    """Built once per (version, nonce): every stream gets the same sequence, so one message serves all, as
    the replica shares one message per version among its wildcard streams."""
    return (wire.field_str(F_VERSION_INFO, str(version)) + resources + wire.field_str(F_TYPE_URL, type_url)
            + wire.field_str(F_NONCE, str(nonce)))


def padding(size: int) -> bytes:
    """A DiscoveryResponse's resources field of about ``size`` bytes: one cluster with a long stat name."""
    if size <= 0:
        return b""
    cluster = cluster_pb2.Cluster(name="floor", alt_stat_name="x" * size)
    return discovery_pb2.DiscoveryResponse(resources=[any_pb2.Any(
        type_url=rs.CLUSTER, value=cluster.SerializeToString())]).SerializeToString()


def handler(versions: Versions, resources: bytes = b""):
    async def handle(requests, context) -> None:
        for nonce, type_url in enumerate((rs.CLUSTER, rs.LISTENER), 1):
            await context.read()
            await context.write(response(versions.number, type_url, nonce))

        async def read() -> None:
            while await context.read() is not grpc.aio.EOF:
                pass

        reader = asyncio.ensure_future(read())
        try:
            nonce = 2
            while not reader.done():
                await versions.next
                nonce += 1
                await context.write(response(versions.number, rs.CLUSTER, nonce, resources))
        finally:
            reader.cancel()
    return handle


async def serve(listen: str, sotw_bytes: int = 0) -> None:
    tune_gc()
    versions = Versions()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    table = {name: grpc.stream_stream_rpc_method_handler(handler(versions, pad), request_deserializer=req.FromString)
             for name, req, pad in (("StreamAggregatedResources", discovery_pb2.DiscoveryRequest, padding(sotw_bytes)),
                                    ("DeltaAggregatedResources", discovery_pb2.DeltaDiscoveryRequest, b""))}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(ADS, table)])
    server.add_insecure_port(listen)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, versions.bump)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", required=True)
    p.add_argument("--sotw-bytes", type=int, default=0, help="bytes of resources in each SotW CDS push")
    args = p.parse_args()
    asyncio.run(serve(args.listen, args.sotw_bytes))


if __name__ == "__main__":
    main()
