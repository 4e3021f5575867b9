"""What Redis gives the control plane: the leader's write rate, and what each ADS replica costs Redis.

    .venv/bin/python bench/bench_redis.py [--builders 500] [--seconds 3] [--replicas 100] [--save]

Each topology is started from Debian's redis-server 7 (/usr/bin/redis-server) on loopback,
persistence off: a single node, a Sentinel deployment (1 master, 1 replica, 3 sentinels) and a
Redis Cluster (3 masters, one replica each). Through ``shared.connect`` URLs, as the services use them:

- leader writes: ``Store.apply`` in a loop, one change per call (a builder added or removed), the
  way the leader writes (one fenced script call per version, each waiting for the previous);
  changes/s and the latency of one write. Then 10 changes per call.
- per ADS replica: ``--replicas`` simulated replicas, each with its own client, doing what
  xds-server does to Redis: XREAD BLOCK 1000 on the change stream (one per version, or one per
  second when idle) and the status writes once a second (one HSET of its own entry, one of its
  Envoys'). The leader writes 10 changes/s meanwhile. Measured on the Redis node that holds the
  ``{xds}`` slot: commands/s and CPU seconds/s, minus the same without replicas, per replica.

The figures go to docs/scaling.md; ``--save`` also merges them into bench/results.json.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402

from bench.common import builder, cpu_seconds, machine, pct, save, table  # noqa: E402
from harness.redis_ha import HAVE_REDIS7, SKIP_REASON, ClusterProcs, Node, SentinelProcs  # noqa: E402
from harness.writer import acquire
from shared.connect import aclose, connect  # noqa: E402
from shared.keys import Keys  # noqa: E402
from shared.store import Store  # noqa: E402

KEYS = Keys()


class Topology:
    def __init__(self, name: str, url: str, slot_node: Node, stop):
        self.name, self.url, self.slot_node, self.stop = name, url, slot_node, stop

    def commands(self) -> int:
        with self.slot_node.client() as c:
            return int(c.info("stats")["total_commands_processed"])

    def cpu(self) -> float:
        return cpu_seconds(self.slot_node.proc.pid)


def single(tmp: Path) -> Topology:
    node = Node(tmp, "single").start()
    return Topology("single node", f"redis://127.0.0.1:{node.port}/0", node, node.stop)


def sentinel(tmp: Path) -> Topology:
    procs = SentinelProcs(tmp / "sentinel").start()
    return Topology("sentinel", procs.url, procs.master, procs.stop)


def cluster(tmp: Path) -> Topology:
    procs = ClusterProcs(tmp / "cluster").start()
    return Topology("cluster (3 masters)", procs.url, procs.slot_master("{xds}"), procs.stop)


async def seeded(url: str, count: int):
    store = Store(connect(url, name="bench-leader"), KEYS)
    with_lease = await acquire(store, "bench", 600_000)
    version = with_lease.version
    for start in range(0, count, 500):
        version = await store.apply(with_lease, version, [builder(n) for n in range(start, min(count, start + 500))], [])
    return store, with_lease, version


async def write_rate(url: str, builders: int, seconds: float, batch: int) -> dict:
    store, lease, version = await seeded(url, builders)
    pool = [builder(1_000_000 + n) for n in range(batch)]
    latencies: list[float] = []
    present = False
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < seconds:
            t0 = time.perf_counter()
            if present:
                version = await store.apply(lease, version, [], [b.id for b in pool])
            else:
                version = await store.apply(lease, version, pool, [])
            latencies.append(time.perf_counter() - t0)
            present = not present
        elapsed = time.perf_counter() - started
    finally:
        await aclose(store.client)
    return {"writes_per_s": round(len(latencies) / elapsed), "changes_per_s": round(len(latencies) * batch / elapsed),
            "p50_ms": round(pct(latencies, 50) * 1000, 2), "p99_ms": round(pct(latencies, 99) * 1000, 2)}


async def replica_load(topo: Topology, builders: int, replicas: int, seconds: float, rate: float = 10.0) -> dict:
    """Redis commands/s and CPU with ``replicas`` simulated ADS replicas while the leader writes ``rate``/s."""
    store, lease, version = await seeded(topo.url, builders)
    clients = [connect(topo.url, name=f"bench-r{n}") for n in range(replicas)]
    stores = [Store(c, KEYS) for c in clients]
    for s in stores:  # one at a time: a hundred cluster clients learning the slots at once starve this loop
        await s.version()
    halt = asyncio.Event()
    versions_seen = [0] * replicas
    reads = [0]

    async def follower(n: int, s: Store) -> None:
        last = "$"  # from now on (a real replica starts with one load; not what is measured here)
        while not halt.is_set():
            reads[0] += 1
            for change in await s.read_changes(last, block_ms=1000):
                last, versions_seen[n] = change.stream_id, change.version

    async def status(n: int, s: Store) -> None:
        envoys = {f"edge-{n}-{e}": {"replica": f"r{n}", "acked": {"cds": "1", "lds": "1"}} for e in range(10)}
        while not halt.is_set():
            now = round(time.time(), 3)
            await s.put_status(KEYS.replicas, {f"r{n}": {"version": versions_seen[n], "heartbeat": now}})
            await s.put_status(KEYS.envoys, {k: {**v, "heartbeat": now} for k, v in envoys.items()})
            try:
                await asyncio.wait_for(halt.wait(), 1.0)
            except TimeoutError:
                pass

    async def leader() -> int:
        nonlocal version
        pool = builder(2_000_000)
        present, writes = False, 0
        while not halt.is_set():
            version = await store.apply(lease, version, [] if present else [pool], [pool.id] if present else [])
            present, writes = not present, writes + 1
            await asyncio.sleep(1 / rate)
        return writes

    tasks = [asyncio.create_task(follower(n, s)) for n, s in enumerate(stores)]
    tasks += [asyncio.create_task(status(n, s)) for n, s in enumerate(stores)]
    writer = asyncio.create_task(leader())
    await asyncio.sleep(1.0)  # everyone connected and loaded
    c0, cpu0, t0, r0, v0 = topo.commands(), topo.cpu(), time.perf_counter(), reads[0], version
    await asyncio.sleep(seconds)
    c1, cpu1, t1, r1, v1 = topo.commands(), topo.cpu(), time.perf_counter(), reads[0], version
    halt.set()
    await writer
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in (*clients, store.client):
        await aclose(c)
    return {"replicas": replicas, "commands_per_s": round((c1 - c0) / (t1 - t0)),
            "cpu_per_s": round((cpu1 - cpu0) / (t1 - t0), 4), "leader_writes_per_s": round((v1 - v0) / (t1 - t0), 1),
            "xreads_per_s": round((r1 - r0) / (t1 - t0))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--builders", type=int, default=500)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--replicas", type=int, default=100, help="simulated ADS replicas for the per-replica cost")
    p.add_argument("--only", choices=("single", "sentinel", "cluster"), action="append")
    p.add_argument("--save", action="store_true", help="merge the figures into bench/results.json")
    a = p.parse_args()
    if not HAVE_REDIS7:
        print(SKIP_REASON, file=sys.stderr)
        return 2
    rows, per_replica, out = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        for name, make in (("single", single), ("sentinel", sentinel), ("cluster", cluster)):
            if a.only and name not in a.only:
                continue
            topo = make(Path(tmp) / name)
            try:
                one = asyncio.run(write_rate(topo.url, a.builders, a.seconds, 1))
                ten = asyncio.run(write_rate(topo.url, a.builders, a.seconds, 10))
                idle = asyncio.run(replica_load(topo, a.builders, 0, a.seconds))
                busy = asyncio.run(replica_load(topo, a.builders, a.replicas, a.seconds))
            finally:
                topo.stop()
            ops = (busy["commands_per_s"] - idle["commands_per_s"]) / a.replicas
            cpu = max(busy["cpu_per_s"] - idle["cpu_per_s"], 1e-9) / a.replicas
            rows.append([topo.name, one["changes_per_s"], one["p50_ms"], one["p99_ms"],
                         ten["changes_per_s"], ten["p50_ms"]])
            per_replica.append([topo.name, a.replicas, busy["commands_per_s"], f"{ops:.1f}",
                                f"{cpu * 1e6:.0f}", f"{0.5 / cpu:.0f}"])
            out.append({"topology": name, "builders": a.builders, "one_change": one, "ten_changes": ten,
                        "idle": idle, "with_replicas": busy, "commands_per_replica_s": round(ops, 1),
                        "cpu_us_per_replica_s": round(cpu * 1e6), "replicas_per_half_core": round(0.5 / cpu)})
    print(f"{machine()}; {a.builders} builders in the set; Redis 7.0 on loopback, persistence off\n")
    print(table("leader writes (Store.apply in a loop, each waiting for the previous)",
                ["topology", "changes/s", "p50 ms", "p99 ms", "changes/s @10 per write", "p50 ms"], rows))
    print()
    print(table("per ADS replica (XREAD BLOCK + status once a second; leader at 10 changes/s)",
                ["topology", "replicas", "Redis cmd/s", "cmd/s per replica", "Redis CPU us/s per replica",
                 "replicas per 1/2 core"], per_replica))
    if a.save:
        save("redis", out)
    else:
        sys.stdout.write("\n" + orjson.dumps(out).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
