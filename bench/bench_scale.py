"""Scale: 100, 1,000 and 10,000 builders on one replica.

    python -m bench.bench_scale [--sizes 100,1000,10000] [--routing sni_cluster] [--kind delta]

For each size: replica cold start (process start -> gRPC health SERVING, and
-> 10 streams fully served), CPU per change and bytes per change per Envoy
(100 one-builder changes with 10 streams attached), and RSS.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from .common import Writer, builder, cpu_seconds, replica_under_load, rss_mb, save, set_version, table

CHANGES = 100
STREAMS = 10


def run_one(size: int, routing: str, kind: str, tmp: Path) -> dict:
    with replica_under_load(tmp / f"{size}-{kind}", builders=size, routing=routing, per_loader=STREAMS,
                            duration=60) as run:
        xds, version = run.replica, run.version
        run.loaders.start(kind, STREAMS, prefix="load")
        served_s = run.ready_s + run.loaders.wait_served(60)
        time.sleep(0.5)

        async def churn():
            async with Writer(run.url) as w:
                for i in range(CHANGES):
                    n = i % 50
                    await w.apply([builder(n, port=1000 + i)])  # an update of one builder
                    await asyncio.sleep(0.02)
                return w.version

        cpu0 = cpu_seconds(xds.pid)
        final = asyncio.run(churn())
        time.sleep(1.0)
        cpu = cpu_seconds(xds.pid) - cpu0
        rss = rss_mb(xds.pid)
        [(_, data)] = run.loaders.stop()
    return {"builders": size, "routing": routing, "kind": kind, "ready_s": round(run.ready_s, 3),
            "served_s": round(served_s, 3), "cpu_ms_per_change": round(cpu / CHANGES * 1000, 2), **volume(data, version, final),
            "rss_mb": round(rss, 1)}


def volume(data: dict, version: int, final: int) -> dict:
    """What the streams received: on the final version, the initial responses, bytes and responses per change."""
    finals = sum(any(v.split("-")[0] == str(final) for _, v, _ in recs) for recs in data["records"])
    # bytes of the initial full responses are excluded: only responses carrying a later version count
    initial = [r for recs in data["records"] for r in recs if r[1].split("-")[0] == str(version)]
    change_bytes = change_responses = 0
    for recs, sizes in zip(data["records"], data.get("sizes") or [[] for _ in data["records"]]):
        for (_, ver, _), nbytes in zip(recs, sizes):
            if set_version(ver) > version:
                change_bytes += nbytes
                change_responses += 1
    return {"bytes_total": data["bytes"], "streams_on_final": finals, "initial_responses": len(initial),
            # what one Envoy receives per builder change (SotW: fewer, larger responses when changes coalesce)
            "bytes_per_change_per_envoy": round(change_bytes / CHANGES / STREAMS),
            "responses_per_change_per_envoy": round(change_responses / CHANGES / STREAMS, 2)}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="100,1000,10000")
    p.add_argument("--routing", default="sni_cluster")
    p.add_argument("--kind", default="delta")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for size in map(int, args.sizes.split(",")):
            rows.append(run_one(size, args.routing, args.kind, Path(d)))
            print(rows[-1], flush=True)
    base = rows[0]["cpu_ms_per_change"]
    for r in rows:
        r["cpu_ratio_vs_smallest"] = round(r["cpu_ms_per_change"] / base, 2) if base else None
    print(table(f"scale: routing {args.routing}, {args.kind}, {STREAMS} streams, {CHANGES} changes",
                ["builders", "ready s", "served s", "cpu ms/change", "ratio", "bytes/change/Envoy", "RSS MB",
                 "streams on final"],
                [[r["builders"], r["ready_s"], r["served_s"], r["cpu_ms_per_change"], r["cpu_ratio_vs_smallest"],
                  r["bytes_per_change_per_envoy"], r["rss_mb"], f"{r['streams_on_final']}/{STREAMS}"] for r in rows]))
    save(f"scale_{args.routing}_{args.kind}", rows)
    return rows


if __name__ == "__main__":
    main()
