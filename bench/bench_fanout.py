"""Fan-out: one change pushed to N simulated Envoys on one replica; time until every stream ACKed.

    python -m bench.bench_fanout [--streams 100,1000,3000] [--kinds sotw,delta] [--routing sni_cluster] [--runs 1]

Loaders run in separate processes (bench/loadclient.py, 500 streams each).
Latency of a stream = when it received (and at once ACKed) every resource
type of the new version, minus when the change was written to Redis. With
``--runs N`` each figure is the median over N runs (each run a fresh
redis-server and replica). Also reported: seconds from starting the loaders
until every stream was served, and how many stream opens the replica refused
on the way (the loaders retry them with backoff, as Envoy does).
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

from .common import REPO, Writer, builder, median, pct, save, seed, start_redis, start_xds, table, wait_ready

PER_LOADER = 500


def run_one(streams: int, kind: str, routing: str, builders: int, tmp: Path) -> dict:
    redis = start_redis(tmp / f"redis-{kind}-{streams}")
    xds = None
    loaders = []
    try:
        seed(redis.url, builders)
        xds, target = start_xds(redis.url, tmp / "xds.log", routing=routing)
        wait_ready(target)
        for i in range((streams + PER_LOADER - 1) // PER_LOADER):
            n = min(PER_LOADER, streams - i * PER_LOADER)
            out, ready = tmp / f"load{i}.json", tmp / f"ready{i}"
            ready.unlink(missing_ok=True)
            loaders.append((subprocess.Popen(
                [sys.executable, "-m", "bench.loadclient", "--target", target, "--streams", str(n), "--kind", kind,
                 "--duration", "120", "--ready-file", str(ready), "--out", str(out), "--id-prefix", f"l{i}"],
                cwd=REPO), out, ready))
        t_start = time.monotonic()
        deadline = t_start + 90
        while not all(r.exists() for _, _, r in loaders):
            if time.monotonic() > deadline:
                raise TimeoutError("loaders did not all connect")
            time.sleep(0.05)
        connect_s = time.monotonic() - t_start
        time.sleep(0.5)

        async def change():
            async with Writer(redis.url) as w:
                t0 = time.time()
                version = await w.apply([builder(builders + 1)])
                return t0, version

        t0, version = asyncio.run(change())
        time.sleep(2.0 + streams / 1000)
        for p, _, _ in loaders:
            p.send_signal(signal.SIGTERM)
        for p, _, _ in loaders:
            p.wait(60)
        latencies, missing, refused = [], 0, 0
        for _, out, _ in loaders:
            data = json.loads(out.read_text())
            refused += sum(data.get("errors", {}).values())
            for recs in data["records"]:
                times = {}
                for typ, ver, t in recs:
                    if ver.split("-")[0] == str(version):
                        times.setdefault(typ, t)
                if not times:
                    missing += 1
                else:
                    latencies.append(max(times.values()) - t0)
        return {"streams": streams, "kind": kind, "routing": routing, "builders": builders,
                "p50_ms": round(pct(latencies, 50) * 1000, 1), "p99_ms": round(pct(latencies, 99) * 1000, 1),
                "max_ms": round(max(latencies, default=float("nan")) * 1000, 1), "missing": missing,
                "connect_s": round(connect_s, 2), "refused_opens": refused}
    finally:
        for p, _, _ in loaders:
            if p.poll() is None:
                p.kill()
        if xds is not None:
            xds.terminate()
            xds.wait(10)
        redis.stop()


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser()
    p.add_argument("--streams", default="100,1000,3000")
    p.add_argument("--kinds", default="sotw,delta")
    p.add_argument("--routing", default="sni_cluster")
    p.add_argument("--builders", type=int, default=100)
    p.add_argument("--runs", type=int, default=1, help="runs per figure (the median is reported)")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results.json")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for kind in args.kinds.split(","):
            for n in map(int, args.streams.split(",")):
                runs = []
                for _ in range(args.runs):
                    runs.append(run_one(n, kind, args.routing, args.builders, Path(d)))
                    print(runs[-1], flush=True)
                row = dict(runs[0])
                for key in ("p50_ms", "p99_ms", "max_ms", "connect_s"):
                    row[key] = round(median([r[key] for r in runs]), 2)
                row["missing"] = max(r["missing"] for r in runs)
                row["refused_opens"] = max(r["refused_opens"] for r in runs)
                row["runs"] = len(runs)
                rows.append(row)
    print(table(f"fan-out: one change, {args.builders} builders, routing {args.routing}, median of {args.runs} run(s)",
                ["kind", "streams", "p50 ms", "p99 ms", "max ms", "missing", "connect s", "refused opens"],
                [[r["kind"], r["streams"], r["p50_ms"], r["p99_ms"], r["max_ms"], r["missing"], r["connect_s"],
                  r["refused_opens"]] for r in rows]))
    if not args.no_save:
        save("fanout", rows)
    return rows


if __name__ == "__main__":
    main()
