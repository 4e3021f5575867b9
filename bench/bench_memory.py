"""Memory: one replica (one worker) with 10,000 builders and 1,000 streams.

    python -m bench.bench_memory [--builders 10000] [--streams 1000] [--kinds delta,sotw]

redis-server with ``--builders`` builders seeded, one xds-server (sni_cluster),
``--streams`` simulated Envoys of one kind. Reported from /proc/<pid>/status
of the replica: RSS when it is ready (before any stream), once every stream
is served, and after 10 one-builder changes; and its peak (VmHWM) over the
run, which includes the burst of first responses (SotW sends every cluster
to every stream at once; gRPC holds a copy of each until it is written).
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from .common import Writer, builder, replica_under_load, rss_mb, save, table

TARGET_MB = 300


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def changes(url: str, count: int) -> None:
    async with Writer(url) as w:
        for i in range(count):
            await w.apply([builder(i, port=3000 + i)])
            await asyncio.sleep(0.2)


def run_one(kind: str, args, tmp: Path) -> dict:
    with replica_under_load(tmp / kind, builders=args.builders, duration=600) as run:
        xds = run.replica
        time.sleep(0.5)
        ready = rss_mb(xds.pid)
        run.loaders.start(kind, args.streams)
        connect_s = run.loaders.wait_served(180)
        time.sleep(1.0)
        served = rss_mb(xds.pid)
        asyncio.run(changes(run.url, 10))
        time.sleep(1.0)
        after = rss_mb(xds.pid)
        return {"kind": kind, "builders": args.builders, "streams": args.streams, "rss_ready_mb": round(ready, 1),
                "rss_served_mb": round(served, 1), "rss_after_changes_mb": round(after, 1),
                "rss_peak_mb": round(peak_mb(xds.pid), 1), "connect_s": round(connect_s, 2),
                "target_mb": TARGET_MB}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--builders", type=int, default=10_000)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--kinds", default="delta,sotw")
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as d:
        for kind in args.kinds.split(","):
            rows.append(run_one(kind, args, Path(d)))
            print(rows[-1], flush=True)
    print(table(f"memory: one replica, {args.builders:,} builders, {args.streams:,} streams (RSS, MB)",
                ["kind", "ready", "served", "after 10 changes", "peak", "connect s"],
                [[r["kind"], r["rss_ready_mb"], r["rss_served_mb"], r["rss_after_changes_mb"], r["rss_peak_mb"],
                  r["connect_s"]] for r in rows]))
    if not args.no_save:
        save("memory", rows)
    return rows


if __name__ == "__main__":
    main()
