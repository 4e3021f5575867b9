"""The replica's own work for one reconnect, in process (no gRPC): what bench_storm's figures are made of.

    python -m bench.bench_reconnect [--sizes 500,10000] [--label storm]

A cache with N builders and one view; then, per reconnect, what the replica does for a delta
Envoy that comes back holding the current set (``initial_resource_versions`` of every builder) or
the set one change ago: the node is registered (region, listener, view), its CDS and LDS requests
parsed from bytes (gRPC's deserializer does that), the first responses built, their ACKs read, its
``{xds}:envoys`` entry serialized, and the stream leaves. Median microseconds per reconnect over
200 reconnects (20 at 10,000 builders) of CPU time of this process. gRPC's own share of a stream
(set-up, reads, writes) is bench_storm's and grpc_floor's. ``--label`` names the row (a before /
after pair: run it with PYTHONPATH pointing at another checkout's xds_server).
"""
from __future__ import annotations

import argparse
import statistics
import time

import orjson
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from shared import resources as rs
from xds_server.cache import Cache
from xds_server.delta import DeltaStream
from xds_server.peers import Registry
from xds_server.render import ListenerSpec, Renderer

from .common import builder, save, table
from .loadclient import node

Request = discovery_pb2.DeltaDiscoveryRequest


def registry_of(cache: Cache) -> Registry:
    try:
        return Registry(cache)
    except TypeError:  # an xds_server from before the node -> view mapping moved into the cache
        return Registry(cache, ListenerSpec())


def requests(cache: Cache, n: base_pb2.Node, held: dict[str, dict[str, str]]) -> list[bytes]:
    return [Request(node=n, type_url=t, initial_resource_versions=held[t]).SerializeToString()
            for t in (rs.CLUSTER, rs.LISTENER)]


def reconnect(cache: Cache, registry: Registry, first: list[bytes]) -> int:
    """One reconnect; the resources sent (0 when it holds the current set)."""
    stream = DeltaStream(cache, registry, rs.SUPPORTED)
    sent = 0
    for raw in first:
        req = Request.FromString(raw)
        if stream.peer is None:
            stream.peer = registry.join(req.node, "delta")
        stream.on_request(req)
        for type_url, message in stream.responses():
            resp = discovery_pb2.DeltaDiscoveryResponse.FromString(message)
            sent += len(resp.resources)
            stream.on_request(Request(type_url=type_url, response_nonce=resp.nonce))
    status = stream.peer.status("bench")
    orjson.dumps(status if isinstance(status, dict) else status.to_json())  # a dict before shared.status
    registry.leave(stream.peer)
    return sent


def one(size: int, behind: int, label: str) -> dict:
    cache = Cache(Renderer(rs.SNI_CLUSTERS, "builders.internal"))
    cache.replace(1, {b.id: b for b in (builder(n) for n in range(size))})
    registry = registry_of(cache)
    n = node("bench-0", "ord")
    keep = registry.join(n, "delta")  # a stream that stays: the view is not dropped between reconnects
    view = keep.view
    held = {t: {name: r.version for name, r in cache.snapshot(view, t).resources.items()}
            for t in (rs.CLUSTER, rs.LISTENER)}
    for step in range(behind):  # the stream left that many changes ago
        new = builder(size + step)
        cache.apply(cache.version + 1, [(None, new)])
        cache.snapshot(view, rs.CLUSTER)
    first = requests(cache, n, held)
    times, sent = [], 0
    for _ in range(200 if size <= 1000 else 20):
        t0 = time.process_time()
        sent = reconnect(cache, registry, first)
        times.append(time.process_time() - t0)
    return {"label": label, "builders": size, "changes_behind": behind,
            "us_per_reconnect": round(statistics.median(times) * 1e6, 1), "resources_sent": sent}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="500,10000")
    p.add_argument("--label", default="storm")
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    rows = [one(size, behind, args.label) for size in map(int, args.sizes.split(",")) for behind in (0, 1)]
    print(table(f"one delta reconnect, the replica's own work (no gRPC): {args.label}",
                ["builders", "changes behind", "us/reconnect", "resources sent"],
                [[r["builders"], r["changes_behind"], r["us_per_reconnect"], r["resources_sent"]] for r in rows]))
    if not args.no_save:
        save(f"reconnect_{args.label}", rows)
    return rows


if __name__ == "__main__":
    main()
