"""The control plane on Redis Cluster and Redis Sentinel, through failovers (real processes, loopback).

- Store on a 3-master Redis Cluster: every operation, then a coordinated failover of the slot.
- Cluster: the master of the ``{xds}`` slot is killed under DNS churn; its replica is promoted.
- Sentinel: the master is killed under churn; the sentinels promote the replica.
- ``--redis-read-url`` on a replica that lags, then goes back in time: the served version never does.

In each failover test an Envoy keeps routing (no failed TLS connection to a stable builder),
its ACKed version never goes back, and the set converges to DNS. Needs Debian's redis-server 7
and redis-cli (.ci/run installs them).
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest

from harness.procs import ProcGroup, async_wait_until, free_port, script, wait_until
from harness.redis_ha import HAVE_REDIS7, SKIP_REASON, ClusterProcs, Node, SentinelProcs, synced
from harness.writer import acquire
from shared.connect import aclose, connect
from shared.errors import StoreUnavailable
from shared.keys import Keys
from shared.model import Builder
from shared.store import Store

from .cluster import Churn, Cluster, Traffic, VersionWatch, sni

pytestmark = [pytest.mark.skipif(not HAVE_REDIS7, reason=SKIP_REASON), pytest.mark.timeout(120)]
KEYS = Keys()


class Plane(Cluster):
    """tests/faults/cluster.py's control plane on any Redis URL: DNS, discoverers, replicas, Envoys.

    ``redis`` needs ``.url`` and ``.client()`` (a synchronous client of the primary);
    ``xds_args`` are added to every xds-server's command line.
    """

    def __init__(self, tmp, redis, dns_server, procs: ProcGroup, *, replicas: int = 1, pool: int = 8, **kwargs):
        super().__init__(tmp, redis, dns_server, procs, replicas=replicas, pool=pool, **kwargs)

    def status(self) -> dict:
        """``xdsctl --json status`` through the same URL the services use."""
        out = subprocess.run([str(script("xdsctl")), "--redis-url", self.redis.url, "--json", "status"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def epoch(self) -> int:
        with self.redis.client() as c:
            return int(c.get("{xds}:epoch") or 0)

    def converged(self, watch: VersionWatch) -> int:
        """Redis holds the DNS set and the Envoy ACKed Redis' version: that version, else 0."""
        want = {sni(b.id) for b in self.in_dns}
        version = self.redis_version()
        return version if self.redis_routes() == want and watch.current() == version else 0


class Primary:
    """What Plane needs of a Redis: its URL and a synchronous client."""

    def __init__(self, url: str, client):
        self.url, self.client = url, client


@pytest.fixture
def redis_cluster(tmp_path):
    procs = ClusterProcs(tmp_path / "cluster")
    try:
        yield procs.start()
    finally:
        procs.stop()


@pytest.fixture
def sentinels(tmp_path):
    procs = SentinelProcs(tmp_path / "sentinel")
    try:
        yield procs.start()
    finally:
        procs.stop()


def b(i: int) -> Builder:
    return Builder(f"b{i:02d}", "web", "ams", f"127.0.0.{i + 1}", 443, f"b{i:02d}.builders.internal", seen_at=1.0)


async def test_the_store_on_redis_cluster_and_through_a_slot_failover(redis_cluster):
    """Fenced scripts, the MULTI reads, XREAD BLOCK and status on Cluster; then CLUSTER FAILOVER of the slot."""
    client = connect(redis_cluster.url, timeout=1.0, name="tests")
    store = Store(client, KEYS)
    try:
        lease = await acquire(store, "a", 10_000)
        assert lease.epoch == 1
        assert await store.apply(lease, 0, [b(1), b(2)], []) == 1
        snap = await store.load()
        assert snap.version == 1 and set(snap.builders) == {"b01", "b02"} and snap.last_change_id != "0-0"
        assert (await store.leader())[:2] == ("a", 1)
        waiting = asyncio.ensure_future(store.read_changes(snap.last_change_id, block_ms=3000))
        await asyncio.sleep(0.2)
        assert await store.apply(lease, 1, [], ["b01"]) == 2
        changes = await asyncio.wait_for(waiting, 5)
        assert [(c.version, c.removed) for c in changes] == [(2, ("b01",))]
        await store.put_status(KEYS.replicas, {"r1": {"version": 2}})
        assert await store.get_status(KEYS.replicas) == {"r1": {"version": 2}}

        master = redis_cluster.slot_master("{xds}")
        replica = redis_cluster.replica_of(master)
        wait_until(lambda: synced(replica, master), 5, what="the slot's replica in sync")
        with replica.client() as c:
            c.execute_command("CLUSTER", "FAILOVER")
        wait_until(lambda: redis_cluster.slot_master("{xds}") is replica, 10, what="the replica serves the slot")

        async def applied() -> int:  # MOVED (or a closed connection) at most once, then the new master
            try:
                return await store.apply(lease, 2, [b(3)], [])
            except StoreUnavailable:
                return 0
        assert await async_wait_until(applied, 10, interval=0.1, what="a write on the new master") == 3
        snap = await store.load()
        assert snap.version == 3 and set(snap.builders) == {"b02", "b03"}
        assert await store.renew(lease, 10_000)
    finally:
        await aclose(client)


def version_on(node: Node, *, cluster: bool) -> int:
    with node.client() as c:
        if cluster:
            c.execute_command("READONLY")  # a cluster replica answers for its master's slots
        return int(c.get("{xds}:version") or 0)


def run_failover(plane: Plane, master: Node, replica: Node, promoted, *, cluster: bool, label: str) -> None:
    """Churn and traffic through one Envoy; the replica misses the last writes (paused, its link
    cut), the master is killed, the replica promoted: acknowledged writes are lost and must be
    written again."""
    envoy = plane.envoy("edge-1")
    plane.wait_routed(envoy, plane.stable)
    traffic, churn, watch = Traffic(plane, envoy), Churn(plane, every=0.25), VersionWatch(envoy)
    for t in (traffic, churn, watch):
        t.start()
    try:
        wait_until(lambda: plane.redis_version() >= 5, 10, what="the set churning")
        wait_until(lambda: synced(replica, master), 5, what="the replica in sync")
        epoch = plane.epoch()
        replica.pause()
        with master.client() as c:  # the link is cut: from here the master acknowledges writes no replica gets
            c.client_kill_filter(_type="replica")
        time.sleep(0.8)
        written = version_on(master, cluster=False)
        master.kill()
        killed = time.monotonic()
        replica.resume()
        kept = version_on(replica, cluster=cluster)
        wait_until(promoted, 20, interval=0.1, what="the replica promoted")
        promoted_after = time.monotonic() - killed
        wait_until(lambda: plane.redis_version() > written, 15, interval=0.1, what="the leader writing again")
        writing_after = time.monotonic() - killed
        time.sleep(1.5)  # more churn on the new master
    finally:
        churn.stop()
    final = wait_until(lambda: plane.converged(watch), 15, interval=0.1, what="Envoy and Redis on the DNS set")
    traffic.stop()
    watch.stop()
    status = wait_until(lambda: (s := plane.status())["replicas"].get("r1", {}).get("version") == final and s,
                        10, interval=0.2, what="the replica's status at the final version")
    print(f"\nFIGURE {label}: replica promoted {promoted_after:.1f}s after the kill, leader writing again "
          f"after {writing_after:.1f}s; versions {kept + 1}..{written} acknowledged and lost, rewritten; "
          f"epoch {epoch} -> {plane.epoch()}; {churn.changes} DNS changes, {traffic.ok} TLS connections, "
          f"{traffic.failed} failed; final version {final}")
    assert written > kept, "the failover lost no write: the test did not test that"
    assert traffic.failed == 0, traffic.failures[:10]
    assert traffic.ok > 50
    assert not watch.backwards, f"Envoy was sent older versions: {watch.backwards[:5]}"
    assert status["replicas"]["r1"]["lag"] == 0
    assert all(p.alive for p in (*plane.discoverers, *plane.replicas)), "every service survived the failover"


@pytest.mark.e2e
def test_cluster_slot_master_killed_under_churn(tmp_path, redis_cluster, dns_server, procs):
    plane = Plane(tmp_path, Primary(redis_cluster.url, redis_cluster.client), dns_server, procs)
    master = redis_cluster.slot_master("{xds}")
    replica = redis_cluster.replica_of(master)
    run_failover(plane, master, replica, lambda: redis_cluster.role(replica) == "master", cluster=True,
                 label="cluster-failover")


@pytest.mark.e2e
def test_sentinel_master_killed_under_churn(tmp_path, sentinels, dns_server, procs):
    plane = Plane(tmp_path, Primary(sentinels.url, sentinels.client), dns_server, procs)
    run_failover(plane, sentinels.master, sentinels.replica, lambda: sentinels.current_master() is sentinels.replica,
                 cluster=False, label="sentinel-failover")


@pytest.mark.e2e
def test_a_lagging_read_replica_never_makes_the_served_version_go_back(tmp_path, dns_server, procs):
    """xds-server --redis-read-url on replica R of primary P. R paused (SIGSTOP): the replica keeps its
    version and xdsctl shows the lag. Then R resyncs from L, a replica frozen at an older version: R
    goes back in time, and the served version must not."""
    common = ["--repl-ping-replica-period", "1"]
    primary = Node(tmp_path / "redis", "primary", common).start()
    nodes = [primary]
    try:
        read = Node(tmp_path / "redis", "read", [*common, "--replicaof", "127.0.0.1", str(primary.port)]).start()
        frozen = Node(tmp_path / "redis", "frozen", [*common, "--replicaof", "127.0.0.1", str(primary.port)]).start()
        nodes += [read, frozen]
        read_url = f"redis://127.0.0.1:{read.port}/0"
        plane = Plane(tmp_path, Primary(f"redis://127.0.0.1:{primary.port}/0", primary.client), dns_server, procs,
                      discoverers=1, xds_args=["--redis-read-url", read_url])
        envoy = plane.envoy("edge-1")
        plane.wait_routed(envoy, plane.stable)
        watch, traffic = VersionWatch(envoy), Traffic(plane, envoy, every=0.1)
        watch.start()
        traffic.start()

        def add(n: int) -> int:
            plane.set_dns(plane.in_dns + [plane.pool[n]])
            return wait_until(lambda: plane.redis_version() if sni(plane.pool[n].id) in plane.redis_routes() else 0,
                              5, what=f"pool builder {n} written")

        def replica_status() -> dict:
            return plane.status()["replicas"]["r1"]

        v1 = add(0)
        wait_until(lambda: watch.current() == v1, 10, what="Envoy on v1")
        # 1. the read replica stops (SIGSTOP): the served version stays, the lag shows in xdsctl
        read.pause()
        v2 = add(1)
        # the server knows the primary is ahead (its lag) and still serves v1: it could have moved, did not
        lagging = wait_until(lambda: (r := replica_status())["lag"] > 0 and r, 5, what="lag in xdsctl status")
        assert lagging["version"] == v1 and lagging["reads"] == "replica"
        assert watch.current() == v1
        read.resume()
        wait_until(lambda: watch.current() == v2, 10, what="Envoy on v2 after the replica resumed")
        wait_until(lambda: replica_status()["lag"] == 0, 5, what="no lag")
        # 2. the read replica goes back in time: it resyncs from a replica frozen at v2
        wait_until(lambda: synced(frozen, primary), 5, what="frozen replica in sync")
        with frozen.client() as c:
            c.replicaof("NO", "ONE")
        v3 = add(2)
        v4 = add(3)
        wait_until(lambda: watch.current() == v4, 10, what="Envoy on v4")
        with read.client() as c:
            c.replicaof("127.0.0.1", frozen.port)
        seen = wait_until(lambda: (r := replica_status())["source_version"] == v2 and r, 10,
                          what="the read replica back at v2 and the xds-server reading it")
        wait_until(lambda: replica_status()["heartbeat"] > seen["heartbeat"], 5, what="a status round after")
        assert seen["version"] == v4
        assert watch.current() == v4 and replica_status()["version"] == v4
        assert plane.reach(envoy, plane.pool[3].id), "a builder of v4 is still routed"
        # 3. the read replica follows the primary again: the server moves on from v4, never below
        with read.client() as c:
            c.replicaof("127.0.0.1", primary.port)
        v5 = add(4)
        wait_until(lambda: watch.current() == v5, 10, what="Envoy on v5")
        traffic.stop()
        watch.stop()
        print(f"\nFIGURE read-replica: versions seen by Envoy {sorted(set(watch.seen))}; read replica lagged "
              f"{lagging['lag']} version(s) while paused; {traffic.ok} TLS connections, {traffic.failed} failed")
        assert v1 < v2 < v3 < v4 < v5
        assert not watch.backwards, f"Envoy was sent older versions: {watch.backwards[:5]}"
        assert traffic.failed == 0, traffic.failures[:10]
        assert plane.replicas[0].log_has("behind our version")
        assert plane.replicas[0].alive, "a blocked XREAD unblocked by REPLICAOF (UNBLOCKED) is an outage, not a crash"
    finally:
        for node in nodes:
            node.stop()
