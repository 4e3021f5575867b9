"""Scale: 100, 1,000 and 10,000 builders on one replica.

    python -m bench.bench_scale [--sizes 100,1000,10000] [--routing sni_cluster] [--kind delta]

For each size: replica cold start (process start -> gRPC health SERVING, and
-> 10 streams fully served), CPU per change and bytes per change per Envoy
(100 one-builder changes with 10 streams attached), and RSS.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import (REPO, Writer, builder, cpu_seconds, rss_mb, save, seed, set_version, start_redis, start_xds,
                     table, wait_ready)

CHANGES = 100
STREAMS = 10


def loader(target: str, kind: str, out: Path, ready: Path, duration: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.loadclient", "--target", target, "--streams", str(STREAMS),
                             "--kind", kind, "--duration", str(duration), "--ready-file", str(ready),
                             "--out", str(out)], cwd=REPO)




def wait_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not written")
        time.sleep(0.005)


def run_one(size: int, routing: str, kind: str, tmp: Path) -> dict:
    redis = start_redis(tmp / f"redis-{size}-{kind}")
    xds = load = None
    try:
        version = seed(redis.url, size)
        out, ready = tmp / f"load-{size}.json", tmp / f"ready-{size}"
        t0 = time.monotonic()
        xds, target = start_xds(redis.url, tmp / f"xds-{size}.log", routing=routing)
        wait_ready(target)
        ready_s = time.monotonic() - t0  # from process start, Python's imports included
        load = loader(target, kind, out, ready, 60)
        wait_file(ready, 60)
        served_s = time.monotonic() - t0
        time.sleep(0.5)

        async def churn():
            async with Writer(redis.url) as w:
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
        load.send_signal(signal.SIGTERM)
        load.wait(30)
        data = json.loads(out.read_text())
        finals = 0
        for recs in data["records"]:
            finals += any(v.split("-")[0] == str(final) for _, v, _ in recs)
        total_bytes = data["bytes"]
        # bytes of the initial full responses are excluded: only responses carrying a later version count
        initial = [r for recs in data["records"] for r in recs if r[1].split("-")[0] == str(version)]
        change_bytes = change_responses = 0
        for recs, sizes in zip(data["records"], data.get("sizes") or [[] for _ in data["records"]]):
            for (_, ver, _), nbytes in zip(recs, sizes):
                if set_version(ver) > version:
                    change_bytes += nbytes
                    change_responses += 1
        return {"builders": size, "routing": routing, "kind": kind, "ready_s": round(ready_s, 3),
                "served_s": round(served_s, 3), "cpu_ms_per_change": round(cpu / CHANGES * 1000, 2),
                "bytes_total": total_bytes, "rss_mb": round(rss, 1), "streams_on_final": finals,
                "initial_responses": len(initial),
                # what one Envoy receives per builder change (SotW: fewer, larger responses when changes coalesce)
                "bytes_per_change_per_envoy": round(change_bytes / CHANGES / STREAMS),
                "responses_per_change_per_envoy": round(change_responses / CHANGES / STREAMS, 2)}
    finally:
        for p in (load, xds):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(10)
        redis.stop()


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
