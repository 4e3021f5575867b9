"""A replica's death under many Envoys: replica A is killed (SIGKILL) under N delta streams that reconnect
to replica B as Envoy does; how long until every stream is served again, and what a change costs the
streams already on B during that storm.

    python -m bench.bench_storm [--streams 1000,3000] [--builders 500] [--workers 1] [--connected 200]
                                [--jitter 0.5] [--floor] [--no-save] [--py-spy FILE]
    python -m bench.bench_storm --cold 3000x500,1000x10000 [--workers 1]

Simulated Envoys (bench/loadclient.py, 500 streams a process, 10 a TCP connection) open on A with
B as the next target; after A dies each stream waits uniform(0, --jitter) s and opens on B with
``initial_resource_versions`` (what it holds). ``--connected`` more streams sit on B throughout.
250 ms after the kill (in the middle of the storm) one builder is added. Figures per run: every
storm stream re-served by B (its first CDS and LDS after the kill) from the kill and from its own
open on B (B's work and queueing), resources resent that the stream already held (0 when B resends
nothing needlessly), the change's latency at the connected streams (push pacing included) and at
the storm streams, B's CPU seconds during the storm, the streams each of B's workers holds after it
(``{xds}:replicas``), and the load average (the machine is shared: figures under load say so). With
``--floor`` each storm is run again between two bench/grpc_floor.py servers (gRPC alone, empty
responses; no change reaches them): how fast this machine and these load clients allow at all.

``--cold STREAMSxBUILDERS,...``: a fleet-wide Envoy restart instead: one replica, every stream opened
at once with nothing held (no initial versions); seconds until every stream had its first CDS and
LDS, the replica's peak RSS and CPU seconds (section ``storm_cold``); then the same streams on
bench/grpc_floor.py (gRPC alone, empty responses), in the same run: the transport's floor per stream.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import redis as redis_lib

from shared.keys import Keys
from shared.status import ReplicaStatus, fresh

from harness.plane import Plane, Replica
from harness.wait import wait_until

from .bench_fanout import wait_workers
from .common import (Loaders, Run, Writer, builder, pct, proc_cpu, replica_under_load, rss_mb, save, seed,
                     set_version, table)

PER_LOADER = 500
PER_CONNECTION = ["--per-connection", "10"]  # TCP connections: spread over the survivor's workers
CHANGE_AFTER = 0.25  # seconds after the kill: the change lands while streams reconnect


def ms(values: list[float], q: float) -> float | None:
    """A percentile in ms; None when not every stream got there (or none did)."""
    value = pct(values, q)
    return round(value * 1000, 1) if math.isfinite(value) else None


def reserved(data: dict, t_kill: float) -> tuple[list[float], list[float], int]:
    """Per storm stream: seconds from the kill, and from its open on B, to its first CDS and LDS after
    the kill; and resources resent at versions the stream held before the kill."""
    from_kill, from_open, needless = [], [], 0
    for recs, counts, opens in zip(data["records"], data["counts"], data["opens"]):
        reopen = next((t for at, t in opens if t > t_kill), None)
        first: dict[str, float] = {}
        before = {typ: ver for typ, ver, t in recs if t <= t_kill}
        for (typ, ver, t), n in zip(recs, counts):
            if t > t_kill:
                first.setdefault(typ, t)
                needless += n if ver == before.get(typ) else 0
        if reopen is None or len(first) < 2:
            from_kill.append(float("inf"))
            continue
        from_kill.append(max(first.values()) - t_kill)
        from_open.append(max(first.values()) - reopen)
    return from_kill, from_open, needless


def change_latency(loaded: list[dict], version: int, t0: float) -> list[float]:
    """Per stream: seconds from the change until it had every type that ``version`` changed."""
    out = []
    for data in loaded:
        for recs in data["records"]:
            times: dict[str, float] = {}
            for typ, ver, t in recs:
                if set_version(ver) == version:
                    times.setdefault(typ, t)
            out.append(max(times.values()) - t0 if times else float("inf"))
    return out


def start_pair(plane: Plane, workers: int, floor: bool = False) -> tuple[Replica, Replica]:
    """Replicas A and B (B with ``--workers``), serving; or two grpc_floor servers, listening."""
    if floor:
        return start_floor(plane, "floor-a"), start_floor(plane, "floor-b")
    flags = ("--routing", "sni_cluster", "--log-level", "warning")
    a = plane.start_replica(*flags, label="a", wait=True)
    b = plane.start_replica(*flags, *(["--workers", str(workers)] if workers > 1 else []), label="b", wait=True)
    wait_workers(plane.redis_url, workers)
    return a, b


def start_floor(plane: Plane, label: str) -> Replica:
    """bench/grpc_floor.py: gRPC alone, answering each stream's first CDS and LDS with empty responses."""
    target = plane.host().hostport(plane.host().free_port())
    proc = plane.procs.start_python(["-m", "bench.grpc_floor", "--listen", target], label=label)
    wait_until(lambda: listening(target), 30, what="grpc_floor listening")
    return Replica(proc, target, plane.region(None))


def streams_on(url: str, target: str) -> list[int]:
    """Streams of each live replica (each worker) listening on ``target``, from {xds}:replicas."""
    client = redis_lib.Redis.from_url(url)
    try:
        raw = {k: orjson.loads(v) for k, v in client.hgetall(Keys().replicas).items()}
    finally:
        client.close()
    live = fresh(raw, ReplicaStatus, time.time()).values()
    return sorted((e.streams for e in live if e.address == target), reverse=True)


def on_b(url: str, target: str, total: int) -> list[int] | None:
    counts = streams_on(url, target)
    return counts if sum(counts) == total else None


def storm(url: str, a: Replica, builders: int, profile: str | None, b_pid: int):
    """Kill A; add a builder CHANGE_AFTER later. Returns (kill time, change time, change version, profiler)."""
    spy = None
    if profile:
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-o", profile, "-f", "raw",
                                "-r", "250", "--pid", str(b_pid), "--subprocesses", "--idle"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches
    t_kill = time.time()
    a.kill(signal.SIGKILL)

    async def change():
        await asyncio.sleep(CHANGE_AFTER)
        async with Writer(url) as w:
            t0 = time.time()
            return t0, await w.apply([builder(builders + 1)])

    t_change, version = asyncio.run(change())
    return t_kill, t_change, version, spy


def run_one(streams: int, builders: int, workers: int, connected: int, jitter: float, tmp: Path,
            profile: str | None = None, floor: bool = False) -> dict:
    plane = Plane(Path(tempfile.mkdtemp(dir=tmp)))
    storming = steady = None
    try:
        plane.start_redis()
        url = plane.redis_url
        seed(url, builders)
        a, b = start_pair(plane, workers, floor)
        storming = Loaders(f"{a.target},{b.target}", plane.dir / "storm", per_loader=PER_LOADER)
        steady = Loaders(b.target, plane.dir / "steady", per_loader=PER_LOADER)
        storming.start("delta", streams, extra=["--jitter", str(jitter), "--resume", *PER_CONNECTION])
        if connected:
            steady.start("delta", connected, extra=PER_CONNECTION)
        storming.wait_served()
        steady.wait_served()
        time.sleep(1.0)  # every ACK in; status entries written
        load_before, cpu_before = os.getloadavg()[0], tree_cpu(b.pid)
        t_kill, t_change, version, spy = storm(url, a, builders, profile, b.pid)
        try:
            storm_s = storming.wait_reopened(timeout=60 + streams / 50)
        except TimeoutError:  # counted in the row (not_reserved), not a failed run
            storm_s = float("nan")
        cpu_storm = tree_cpu(b.pid) - cpu_before
        time.sleep(1.0)  # the change reaches every stream
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        per_replica = [] if floor else wait_until(lambda: on_b(url, b.target, streams + connected), 15,
                                                  what="every stream in the survivor's status")
        stormed = [d for _, d in storming.stop()]
        settled = [d for _, d in steady.stop()] if connected else []
        row = summarize(streams, builders, workers, jitter, stormed, settled, t_kill, t_change, version,
                        storm_s, cpu_storm, load_before)
        return {"server": "grpc_floor" if floor else "xds-server", **row, "b_streams_per_worker": per_replica}
    finally:
        for loaders in (storming, steady):
            if loaders is not None:
                loaders.kill()
        plane.close()


def run_cold(streams: int, builders: int, workers: int, tmp: Path) -> dict:
    """The replica's cold start, then grpc_floor's (same streams, empty responses) in the same run."""
    extra = ["--workers", str(workers)] if workers > 1 else []
    with replica_under_load(Path(tempfile.mkdtemp(dir=tmp)), builders=builders, extra=extra, duration=600) as run:
        wait_workers(run.url, workers)
        row = {"streams": streams, "builders": builders, "workers": workers, **opened(run, streams)}
    with replica_under_load(Path(tempfile.mkdtemp(dir=tmp)), builders=0, floor=True, duration=600) as run:
        wait_until(lambda: listening(run.replica.target), 30, what="grpc_floor listening")
        row.update({f"floor_{k}": v for k, v in opened(run, streams).items() if not k.startswith("load")})
    return row


def opened(run: Run, streams: int) -> dict:
    """Every stream opened at once: seconds until all had CDS and LDS, the server's CPU and peak RSS."""
    pid = run.replica.pid
    load_before, cpu_before, t0 = os.getloadavg()[0], tree_cpu(pid), time.monotonic()
    run.loaders.start("delta", streams, extra=PER_CONNECTION)
    run.loaders.wait_served(timeout=600)
    cpu = tree_cpu(pid) - cpu_before
    return {"all_served_s": round(time.monotonic() - t0, 2), "cpu_s": round(cpu, 2),
            "cpu_ms_per_stream": round(cpu / streams * 1000, 3), "peak_rss_mb": round(tree_peak_rss(pid), 1),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}


def listening(target: str) -> bool:
    host, port = target.rsplit(":", 1)
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=0.5):
        return True
    return False


def tree(pid: int) -> list[int]:
    """``pid`` and its children (the workers of ``--workers N``)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        children = []
    return [pid, *map(int, children)]


def tree_cpu(pid: int) -> float:
    return sum(proc_cpu(p) for p in tree(pid))


def tree_peak_rss(pid: int) -> float:
    """The peak RSS of the largest process of the tree (a worker's, or the replica's own)."""
    return max(rss_mb(p, "VmHWM") for p in tree(pid))


def summarize(streams, builders, workers, jitter, stormed, settled, t_kill, t_change, version, storm_s, cpu,
              load_before) -> dict:
    from_kill, from_open, needless = [], [], 0
    for data in stormed:
        k, o, n = reserved(data, t_kill)
        from_kill += k
        from_open += o
        needless += n
    steady = change_latency(settled, version, t_change)
    stormy = change_latency(stormed, version, t_change)
    return {"streams": streams, "builders": builders, "workers": workers, "jitter_s": jitter,
            "connected": sum(len(d["records"]) for d in settled),
            "reserved_p50_ms": ms(from_kill, 50), "reserved_p99_ms": ms(from_kill, 99),
            "reserved_max_ms": ms(from_kill, 100), "all_reserved_s": round(storm_s, 2),
            "from_open_p50_ms": ms(from_open, 50), "from_open_p99_ms": ms(from_open, 99),
            "not_reserved": sum(1 for x in from_kill if x == float("inf")), "needless_resent": needless,
            "change_connected_p50_ms": ms(steady, 50), "change_connected_p99_ms": ms(steady, 99),
            "change_storm_p99_ms": ms(stormy, 99),
            "b_cpu_s": round(cpu, 2), "b_cpu_ms_per_reconnect": round(cpu / streams * 1000, 3),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser()
    p.add_argument("--streams", default="1000,3000")
    p.add_argument("--builders", type=int, default=500)
    p.add_argument("--workers", default="1", help="xds-server --workers of the survivor, comma-separated")
    p.add_argument("--connected", type=int, default=200, help="streams on the survivor throughout")
    p.add_argument("--jitter", type=float, default=0.5, help="reconnect delay: uniform(0, S) seconds")
    p.add_argument("--py-spy", dest="profile", help="record the survivor during the storm (py-spy raw output)")
    p.add_argument("--floor", action="store_true",
                   help="each storm also between two grpc_floor servers (gRPC alone): what the machine allows")
    p.add_argument("--cold", help="STREAMSxBUILDERS,...: every stream opened at once, nothing held")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results.json")
    args = p.parse_args(argv)
    if args.cold:
        return cold(args)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n in map(int, args.streams.split(",")):
            for workers in map(int, args.workers.split(",")):
                for floor in (False, True) if args.floor else (False,):
                    rows.append(run_one(n, args.builders, workers, args.connected, args.jitter, Path(d), args.profile,
                                        floor))
                    print(rows[-1], flush=True)
    print(table(f"storm: replica killed under N delta streams, {args.builders} builders, jitter 0-{args.jitter} s",
                ["server", "streams", "workers", "re-served p50 ms", "p99 ms", "max ms", "from open p99", "needless",
                 "change p99 (connected)", "B cpu ms/reconnect", "streams per worker", "load"],
                [[r["server"], r["streams"], r["workers"], r["reserved_p50_ms"], r["reserved_p99_ms"],
                  r["reserved_max_ms"],
                  r["from_open_p99_ms"], r["needless_resent"], r["change_connected_p99_ms"],
                  r["b_cpu_ms_per_reconnect"], "/".join(map(str, r["b_streams_per_worker"])), r["load_before"]]
                 for r in rows]))
    if not args.no_save:
        save("storm", rows)
    return rows


def cold(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for case in args.cold.split(","):
            streams, builders = map(int, case.split("x"))
            for workers in map(int, args.workers.split(",")):
                rows.append(run_cold(streams, builders, workers, Path(d)))
                print(rows[-1], flush=True)
    print(table("cold start: every stream opened at once, nothing held (floor: grpc_floor, empty responses)",
                ["streams", "builders", "workers", "all served s", "peak RSS MB", "cpu ms/stream",
                 "floor cpu ms/stream", "load"],
                [[r["streams"], r["builders"], r["workers"], r["all_served_s"], r["peak_rss_mb"],
                  r["cpu_ms_per_stream"], r["floor_cpu_ms_per_stream"], r["load_before"]] for r in rows]))
    if not args.no_save:
        save("storm_cold", rows)
    return rows


if __name__ == "__main__":
    main()
