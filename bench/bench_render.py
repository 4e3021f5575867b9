"""Cost of one builder change per routing mode, as one Envoy receives it.

    python -m bench.bench_render [--sizes 100,5000]

In process, no network: a cache with N builders, one view with every type of
the mode rendered (CDS and LDS; with FCDS also the chains); then one builder is
added. Reported: replica time to apply the change and build the responses
(median of 30), and the bytes one Envoy is sent, state-of-the-world and delta
(FCDS is delta only).
"""
from __future__ import annotations

import argparse
import statistics
import time

from shared import resources as rs
from xds_server.cache import Cache
from xds_server.render import ListenerSpec, Renderer

from .common import builder, save, table

RUNS = 30


# (label, --routing, --fcds)
MODES = [(m, m, False) for m in rs.ROUTING_MODES] + [(rs.FILTER_CHAINS_FCDS, rs.FILTER_CHAINS, True)]


def one(mode: str, size: int, fcds: bool = False) -> dict:
    cache = Cache(Renderer(mode, "builders.internal", fcds=fcds))
    types = cache.types
    builders = {b.id: b for b in (builder(n) for n in range(size))}
    cache.replace(1, builders)
    view = cache.view_for(None, ListenerSpec("0.0.0.0", 10443))
    times, sotw_bytes, delta_bytes = [], 0, 0
    for run in range(RUNS):
        before = {t: cache.snapshot(view, t) for t in types}
        for snap in before.values():
            snap.sotw_body()
        new = builder(size + run)
        t0 = time.perf_counter()
        builders[new.id] = new
        cache.apply(cache.version + 1, [(None, new)])
        sotw_bytes = delta_bytes = 0
        for t in types:
            after = cache.snapshot(view, t)
            if after is before[t]:
                continue
            if not cache.delta_only:  # FCDS refuses SotW streams: no SotW body is ever built
                sotw_bytes += len(after.sotw_body())
            delta_bytes += len(cache.delta(view, before[t], after).body)
        times.append(time.perf_counter() - t0)
    return {"mode": rs.FILTER_CHAINS_FCDS if fcds else mode, "builders": size,
            "ms_per_change": round(statistics.median(times) * 1000, 3),
            "sotw_bytes": None if cache.delta_only else sotw_bytes, "delta_bytes": delta_bytes}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="100,5000")
    p.add_argument("--section", default="render", help="name of the section in bench/results.json")
    args = p.parse_args(argv)
    rows = [one(mode, size, fcds) for _, mode, fcds in MODES for size in map(int, args.sizes.split(","))]
    print(table("one builder added: replica time and bytes sent to one Envoy",
                ["mode", "builders", "ms/change", "SotW bytes", "delta bytes"],
                [[r["mode"], r["builders"], r["ms_per_change"], "-" if r["sotw_bytes"] is None else r["sotw_bytes"],
                  r["delta_bytes"]] for r in rows]))
    save(args.section, rows)
    return rows


if __name__ == "__main__":
    main()
