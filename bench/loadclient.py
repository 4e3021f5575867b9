"""Simulated Envoys: many ADS streams in one process, each ACKing every response.

    python -m bench.loadclient --target 127.0.0.1:18000[,127.0.0.1:18001] --streams 500 --kind delta \
        --duration 20 --ready-file R --out results.json [--region ord] [--id-prefix p0] [--jitter 0.5] [--resume]

Each stream subscribes to CDS and LDS (wildcard), ACKs everything at once and
records, per response, (type, version, wall-clock receive time). When every
stream has had its first response, ``--ready-file`` is written. After
``--duration`` seconds (or SIGTERM) the records go to ``--out`` as JSON:
``{"records": [[[type, version, time], ...] per stream], "bytes": total,
"sizes": [[bytes of each response, parallel to records] per stream],
"errors": {gRPC status, exception or ENDED: count}}``. As Envoy does, a
stream that fails or ends is opened again after a jittered backoff (0.5 s
doubling to 5 s); the first failure is also printed on stderr.

A replica's death, as Envoy lives it: with several targets a stream that
fails opens again on the next one; with ``--jitter S`` the first retry after
a stream that was served waits uniform(0, S) seconds (``--reopened-file`` is
written when every stream was opened again and served since); with ``--resume`` a
delta stream sends ``initial_resource_versions`` (what it holds, per type) and
a SotW stream its last ``version_info``. The JSON then also holds, per
stream, ``counts`` (resources in each response, parallel to records) and
``opens`` ([target index, wall-clock time] of every stream opened). By default
every stream of the process shares one TCP connection per target (gRPC's
subchannel pool); ``--per-connection N`` gives every N streams their own, so
that ``xds-server --workers`` (SO_REUSEPORT: one worker per connection) sees
many clients, as it does with real Envoys.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from shared import resources as rs

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
TYPES = (rs.CLUSTER, rs.LISTENER)
RETRY_BASE, RETRY_MAX = 0.5, 5.0  # seconds; Envoy's ADS stream retries with jittered exponential backoff too


def node(node_id: str, region: str) -> base_pb2.Node:
    meta = struct_pb2.Struct()
    meta.update({"listener_port": "10443", "region": region})
    return base_pb2.Node(id=node_id, cluster="bench", locality=base_pb2.Locality(region=region), metadata=meta)


class Loader:
    def __init__(self, args):
        self.args = args
        self.records: list[list] = [[] for _ in range(args.streams)]
        self.sizes: list[list[int]] = [[] for _ in range(args.streams)]
        self.all_first = asyncio.Event()
        self.bytes = 0
        self.errors: dict[str, int] = {}  # stream failures by gRPC status / exception; each is retried
        self.served: set[int] = set()
        self.targets = args.target.split(",")
        self.counts: list[list[int]] = [[] for _ in range(args.streams)]
        self.opens: list[list] = [[] for _ in range(args.streams)]
        self.held: list[dict[str, dict[str, str]]] = [{} for _ in range(args.streams)]  # type -> name -> version
        self.reserved: set[int] = set()  # streams opened again after a failure and served since

    async def stream(self, channels: list[grpc.aio.Channel], i: int) -> None:
        """One simulated Envoy: like Envoy, it opens its stream again after a failure, with jittered backoff
        (on the next target, when there are several)."""
        failures, at = 0, 0
        while True:
            served = len(self.records[i])
            self.reserved.discard(i)
            try:
                self.opens[i].append((at, time.time()))
                await self._stream(channels[at], i)
                key = "ENDED"  # the server closed the stream
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - counted and reported, then retried
                key = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
                if not self.errors:
                    print(f"loadclient {self.args.id_prefix}: stream {i} failed (retrying): {exc!r}"[:300],
                          file=sys.stderr)
            self.errors[key] = self.errors.get(key, 0) + 1
            failures = 1 if len(self.records[i]) > served else failures + 1
            at = (at + 1) % len(channels)
            await asyncio.sleep(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        if self.args.jitter is not None and failures == 1:
            return random.uniform(0, self.args.jitter)
        return min(RETRY_MAX, RETRY_BASE * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)

    def _first(self, req_type, n, type_url: str, i: int):
        """The first request of a type; with --resume it says what the stream holds already."""
        held = self.held[i].get(type_url) if self.args.resume else None
        if not held:
            return req_type(node=n, type_url=type_url)
        if req_type is discovery_pb2.DeltaDiscoveryRequest:
            return req_type(node=n, type_url=type_url, initial_resource_versions=held)
        return req_type(node=n, type_url=type_url, version_info=held[""])

    def _hold(self, i: int, resp, delta: bool) -> None:
        if not delta:
            self.held[i][resp.type_url] = {"": resp.version_info}
            return
        held = self.held[i].setdefault(resp.type_url, {})
        for r in resp.resources:
            held[r.name] = r.version
        for name in resp.removed_resources:
            held.pop(name, None)

    async def _stream(self, channel: grpc.aio.Channel, i: int) -> None:
        delta = self.args.kind == "delta"
        method = ADS + ("DeltaAggregatedResources" if delta else "StreamAggregatedResources")
        req_type = discovery_pb2.DeltaDiscoveryRequest if delta else discovery_pb2.DiscoveryRequest
        resp_type = discovery_pb2.DeltaDiscoveryResponse if delta else discovery_pb2.DiscoveryResponse
        call = channel.stream_stream(method, request_serializer=req_type.SerializeToString,
                                     response_deserializer=lambda b: (len(b), resp_type.FromString(b)))()
        n = node(f"{self.args.id_prefix}-{i}", self.args.region)
        for type_url in TYPES:
            await call.write(self._first(req_type, n, type_url, i))
        seen: set[str] = set()
        async for size, resp in call:
            now = time.time()
            version = resp.system_version_info if delta else resp.version_info
            short = rs.SHORT[resp.type_url]
            self.records[i].append((short, version, now))
            self.sizes[i].append(size)
            self.counts[i].append(len(resp.resources))
            self.bytes += size
            if self.args.resume:
                self._hold(i, resp, delta)
            if delta:
                await call.write(req_type(type_url=resp.type_url, response_nonce=resp.nonce))
            else:
                await call.write(req_type(type_url=resp.type_url, version_info=resp.version_info,
                                          response_nonce=resp.nonce))
            seen.add(short)
            if seen >= {"cds", "lds"}:
                self._served(i)

    def _served(self, i: int) -> None:
        if i not in self.served:
            self.served.add(i)
            if len(self.served) == self.args.streams:
                self.all_first.set()
        elif len(self.opens[i]) > 1 and i not in self.reserved:
            self.reserved.add(i)
            if len(self.reserved) == self.args.streams and self.args.reopened_file:
                with open(self.args.reopened_file, "w") as f:
                    f.write(str(time.time()))

    async def run(self) -> None:
        per_channel = self.args.per_connection or 100
        options = [("grpc.max_receive_message_length", 256 << 20)]
        if self.args.per_connection:  # a connection of its own per channel (else gRPC shares one per target)
            options.append(("grpc.use_local_subchannel_pool", 1))
        groups = [[grpc.aio.insecure_channel(t, options=options) for t in self.targets]
                  for _ in range((self.args.streams + per_channel - 1) // per_channel)]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        with contextlib.suppress(TimeoutError):  # connected before the streams start (they retry anyway)
            await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for g in groups for c in g)), 30)
        tasks = [asyncio.ensure_future(self.stream(groups[i // per_channel], i)) for i in range(self.args.streams)]

        async def mark_ready():
            await self.all_first.wait()
            if self.args.ready_file:
                with open(self.args.ready_file, "w") as f:
                    f.write(str(time.time()))

        ready = asyncio.ensure_future(mark_ready())
        try:
            await asyncio.wait_for(stop.wait(), self.args.duration)
        except TimeoutError:
            pass
        for t in (*tasks, ready):
            t.cancel()
        await asyncio.gather(*tasks, ready, return_exceptions=True)
        for c in (c for group in groups for c in group):
            await c.close()
        tmp = self.args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"records": self.records, "bytes": self.bytes, "sizes": self.sizes, "errors": self.errors,
                       "counts": self.counts, "opens": self.opens}, f)
        os.replace(tmp, self.args.out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True, help="HOST:PORT[,HOST:PORT...]: a failed stream opens on the next")
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--kind", choices=("sotw", "delta"), default="delta")
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--region", default="ord")
    p.add_argument("--id-prefix", default="load")
    p.add_argument("--ready-file")
    p.add_argument("--jitter", type=float, help="first retry after a served stream fails: uniform(0, S) seconds")
    p.add_argument("--per-connection", type=int, default=0,
                   help="streams per TCP connection (Envoy: 1; a replica's workers share connections, not "
                        "streams); default: one connection per target for the whole process")
    p.add_argument("--reopened-file", help="written when every stream was opened again and served since")
    p.add_argument("--resume", action="store_true", help="reopen with what the stream holds (initial versions)")
    p.add_argument("--out", required=True)
    asyncio.run(Loader(p.parse_args()).run())


if __name__ == "__main__":
    main()
