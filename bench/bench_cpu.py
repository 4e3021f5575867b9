"""CPU per stream per change: what one builder change costs the replica for each stream it reaches.

    python -m bench.bench_cpu [--kinds delta,sotw] [--streams 1000] [--builders 500] [--changes 15]
                              [--interval 1.0] [--label after] [--profile DIR] [--floor]

redis-server, one xds-server (sni_cluster), ``--builders`` builders seeded,
``--streams`` simulated Envoys (bench/loadclient.py) of one kind. Once every
stream is served, the replica's CPU is read from /proc/<pid>/stat (utime +
stime, every thread) over an idle window (the status heartbeat), then over
``--changes`` one-builder updates written ``--interval`` seconds apart (far
enough apart that none coalesce: each change is one response per stream).

    per stream per change = (CPU during the changes - idle rate x that time) / (changes x streams)

The per-change work that does not depend on streams (the follower, the
render) is included, spread over the streams. Also reported: the same CPU per
response the streams actually received (equal when nothing coalesced), and
the CPU of the replica's threads by name (the event loop vs grpc-core's own).
Results go under ``cpu_per_stream`` in bench/results.json, one entry per
``--label`` (e.g. ``before`` and ``after``), per kind.

``--floor`` measures bench/grpc_floor.py instead of the replica, the same
way (label ``floor``): a grpc.aio server that only writes each push and
reads each ACK, so the replica's own work is what it costs above that.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared import resources as rs
from xds_server.cache import Cache
from xds_server.render import ListenerSpec, Renderer

from .common import RESULTS, Writer, builder, proc_cpu, replica_under_load, save, set_version, table, thread_cpu

IDLE_S = 5.0  # covers one full status publish (every 5 s)


def profiled(pid: int, path: Path | None) -> subprocess.Popen | None:
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking", "--rate", "250",
                             "--format", "flamegraph", "-o", str(path), "--pid", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def write_changes(url: str, builders: int, changes: int, interval: float) -> list[int]:
    """``changes`` updates of one builder each (a new port), ``interval`` s apart; the versions written."""
    versions = []
    async with Writer(url) as w:
        t0 = time.monotonic()
        for i in range(changes):
            await asyncio.sleep(max(0.0, t0 + i * interval - time.monotonic()))
            versions.append(await w.apply([builder(i % builders, port=2000 + i)]))
    return versions


def signal_changes(pid: int, changes: int, interval: float) -> list[int]:
    """The floor server's changes: SIGUSR1 ``changes`` times; it starts at version 1."""
    for i in range(changes):
        if i:
            time.sleep(interval)
        os.kill(pid, signal.SIGUSR1)
    return list(range(2, changes + 2))


def sotw_cds_bytes(builders: int) -> int:
    """The size of the replica's SotW CDS response with ``builders`` (sni_cluster): what the floor sends."""
    cache = Cache(Renderer(rs.SNI_CLUSTERS, "builders.internal"))
    cache.replace(1, {b.id: b for b in (builder(n) for n in range(builders))})
    return len(cache.snapshot(cache.view_for(None, ListenerSpec("0.0.0.0", 10443)), rs.CLUSTER).sotw_body())


def run_one(kind: str, args, tmp: Path) -> dict:
    extra = ["--sotw-bytes", str(sotw_cds_bytes(args.builders))] if args.floor and kind == "sotw" else []
    load = os.getloadavg()[0]  # the machine is shared: say how loaded it was
    with replica_under_load(tmp / kind, builders=args.builders, floor=args.floor, extra=extra, duration=600) as run:
        xds, loaders = run.replica, run.loaders
        loaders.start(kind, args.streams)
        connect_s = loaders.wait_served()
        time.sleep(1.0)  # the first ACKs and status writes settle
        c0, t0 = proc_cpu(xds.pid), time.monotonic()
        time.sleep(IDLE_S)
        idle_rate = (proc_cpu(xds.pid) - c0) / (time.monotonic() - t0)
        spy = profiled(xds.pid, args.profile and args.profile / f"profile-cpu-{kind}-{args.label}.svg")
        threads0, c1, t1 = thread_cpu(xds.pid), proc_cpu(xds.pid), time.monotonic()
        if args.floor:
            versions = signal_changes(xds.pid, args.changes, args.interval)
        else:
            versions = asyncio.run(write_changes(run.url, args.builders, args.changes, args.interval))
        time.sleep(args.interval)  # the last change reaches every stream
        c2, t2, threads1 = proc_cpu(xds.pid), time.monotonic(), thread_cpu(xds.pid)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        cpu = c2 - c1 - idle_rate * (t2 - t1)
        written = set(versions)
        responses = sum(1 for _, data in loaders.stop() for recs in data["records"]
                        for typ, v, _ in recs if typ == "cds" and set_version(v) in written)
    return {"kind": kind, "label": args.label, "loadavg_start": round(load, 2), "streams": args.streams, "builders": args.builders,
            "changes": args.changes, "interval_s": args.interval, "server": "grpc_floor" if args.floor else "xds-server",
            "connect_s": round(connect_s, 2), "idle_cpu_pct": round(idle_rate * 100, 1),
            "cpu_s": round(cpu, 3), "responses": responses,
            "us_per_stream_per_change": round(cpu / (args.changes * args.streams) * 1e6, 1),
            "us_per_response": round(cpu / max(1, responses) * 1e6, 1),
            "threads_cpu_s": {k: round(threads1.get(k, 0) - v, 2) for k, v in threads0.items()
                              if threads1.get(k, 0) - v >= 0.01}}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", default="delta,sotw")
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--builders", type=int, default=500)
    p.add_argument("--changes", type=int, default=15)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between changes")
    p.add_argument("--floor", action="store_true",
                   help="measure bench/grpc_floor.py instead (label 'floor' unless given)")
    p.add_argument("--label", help="key under cpu_per_stream in bench/results.json (default: after)")
    p.add_argument("--profile", type=Path, help="write a py-spy flame graph of the replica during the changes here")
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    args.label = args.label or ("floor" if args.floor else "after")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as d:
        for kind in args.kinds.split(","):
            rows.append(run_one(kind, args, Path(d)))
            print(rows[-1], flush=True)
    print(table(f"CPU per stream per change ({args.label}): {args.streams} streams, {args.builders} builders, "
                f"{args.changes} changes {args.interval} s apart",
                ["kind", "us/stream/change", "us/response", "responses", "CPU s", "idle %"],
                [[r["kind"], r["us_per_stream_per_change"], r["us_per_response"], r["responses"], r["cpu_s"],
                  r["idle_cpu_pct"]] for r in rows]))
    if not args.no_save:
        try:
            previous = json.loads(RESULTS.read_text()).get("cpu_per_stream", {})
        except (FileNotFoundError, ValueError):
            previous = {}
        save("cpu_per_stream", {**previous, args.label: {r["kind"]: r for r in rows}})
    return rows


if __name__ == "__main__":
    main()
