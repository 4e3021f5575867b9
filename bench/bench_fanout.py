"""Fan-out: one change pushed to N simulated Envoys on one replica; time until every stream ACKed.

    python -m bench.bench_fanout [--streams 100,1000,3000] [--kinds sotw,delta] [--routing sni_cluster] [--runs 1]
                                 [--workers 1,2]

Loaders run in separate processes (bench/loadclient.py, 500 streams each).
Latency of a stream = when it received (and at once ACKed) every resource
type of the new version, minus when the change was written to Redis. With
``--runs N`` each figure is the median over N runs (each run a fresh
redis-server and replica). Also reported: seconds from starting the loaders
until every stream was served, and how many stream opens the replica refused
on the way (the loaders retry them with backoff, as Envoy does). With
``--workers 1,2`` every figure is measured with each ``xds-server --workers``
count in turn, and each row with more than one worker carries
``speedup_p99`` / ``speedup_p50``: the one-worker figure of the same kind and
streams (this run) divided by its own.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import orjson
import redis as redis_lib

from shared.keys import Keys

from harness.wait import wait_until

from .common import Writer, builder, median, pct, replica_under_load, save, set_version, table

PER_LOADER = 500


def run_one(streams: int, kind: str, routing: str, builders: int, tmp: Path, workers: int = 1) -> dict:
    extra = ["--workers", str(workers)] if workers > 1 else []
    with replica_under_load(tmp / f"{kind}-{streams}-{workers}", builders=builders, routing=routing, extra=extra,
                            per_loader=PER_LOADER) as run:
        wait_workers(run.url, workers)
        run.loaders.start(kind, streams)
        connect_s = run.loaders.wait_served()
        time.sleep(0.5)

        async def change():
            async with Writer(run.url) as w:
                t0 = time.time()
                version = await w.apply([builder(builders + 1)])
                return t0, version

        t0, version = asyncio.run(change())
        time.sleep(2.0 + streams / 1000)
        latencies, missing, refused = [], 0, 0
        for _, data in run.loaders.stop():
            refused += sum(data.get("errors", {}).values())
            for recs in data["records"]:
                times = {}
                for typ, ver, t in recs:
                    if set_version(ver) == version:
                        times.setdefault(typ, t)
                if not times:
                    missing += 1
                else:
                    latencies.append(max(times.values()) - t0)
    return {"streams": streams, "kind": kind, "routing": routing, "builders": builders, "workers": workers,
            "p50_ms": round(pct(latencies, 50) * 1000, 1), "p99_ms": round(pct(latencies, 99) * 1000, 1),
            "max_ms": round(max(latencies, default=float("nan")) * 1000, 1), "missing": missing,
            "connect_s": round(connect_s, 2), "refused_opens": refused}


def wait_workers(url: str, workers: int, timeout: float = 30) -> None:
    """With --workers N: until N workers report ready in {xds}:replicas."""
    if workers <= 1:
        return
    client = redis_lib.Redis.from_url(url)
    try:
        def ready():
            entries = [orjson.loads(v) for v in client.hgetall(Keys().replicas).values()]
            return sum(1 for e in entries if e.get("ready") and e.get("workers")) >= workers
        wait_until(ready, timeout, interval=0.05, what=f"{workers} workers ready")
    finally:
        client.close()


def merged(runs: list[dict]) -> dict:
    """One row from several runs of one case: medians of the figures, the worst of the failures."""
    row = dict(runs[0])
    for key in ("p50_ms", "p99_ms", "max_ms", "connect_s"):
        row[key] = round(median([r[key] for r in runs]), 2)
    row["missing"] = max(r["missing"] for r in runs)
    row["refused_opens"] = max(r["refused_opens"] for r in runs)
    row["runs"] = len(runs)
    return row


def add_speedups(rows: list[dict]) -> None:
    """Rows with several workers: how many times faster than one worker, same kind and streams, same run."""
    single = {(r["kind"], r["streams"]): r for r in rows if r["workers"] == 1}
    for r in rows:
        base = single.get((r["kind"], r["streams"]))
        if r["workers"] > 1 and base is not None:
            r["speedup_p99"] = round(base["p99_ms"] / r["p99_ms"], 2) if r["p99_ms"] else None
            r["speedup_p50"] = round(base["p50_ms"] / r["p50_ms"], 2) if r["p50_ms"] else None


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser()
    p.add_argument("--streams", default="100,1000,3000")
    p.add_argument("--kinds", default="sotw,delta")
    p.add_argument("--routing", default="sni_cluster")
    p.add_argument("--builders", type=int, default=500)
    p.add_argument("--runs", type=int, default=1, help="runs per figure (the median is reported)")
    p.add_argument("--workers", default="1", help="xds-server --workers counts to measure, comma-separated")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results.json")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for kind in args.kinds.split(","):
            for n in map(int, args.streams.split(",")):
                for workers in map(int, args.workers.split(",")):
                    runs = []
                    for _ in range(args.runs):
                        runs.append(run_one(n, kind, args.routing, args.builders, Path(d), workers))
                        print(runs[-1], flush=True)
                    rows.append(merged(runs))
    add_speedups(rows)
    print(table(f"fan-out: one change, {args.builders} builders, routing {args.routing}, median of {args.runs} run(s)",
                ["kind", "streams", "workers", "p50 ms", "p99 ms", "max ms", "missing", "connect s", "refused opens",
                 "p99 vs 1 worker"],
                [[r["kind"], r["streams"], r["workers"], r["p50_ms"], r["p99_ms"], r["max_ms"], r["missing"],
                  r["connect_s"], r["refused_opens"], r.get("speedup_p99", "")] for r in rows]))
    if not args.no_save:
        save("fanout", rows)
    return rows


if __name__ == "__main__":
    main()
