"""The fleet keeps routing through failures of the control plane (real processes, loopback)."""
from __future__ import annotations

import json
import signal
import socket
import time

import pytest

from harness.procs import wait_until
from shared import resources as rs

from .cluster import Churn, Cluster, Traffic, VersionWatch, sni

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(150)]


@pytest.fixture
def cluster(tmp_path, redis_server, dns_server, procs):
    return Cluster(tmp_path, redis_server, dns_server, procs)


def replicas_past(cluster: Cluster, version: int) -> bool:
    """Both replicas report (status is published every second) at least ``version``."""
    with cluster.redis.client() as c:
        entries = [json.loads(v) for v in c.hvals("{xds}:replicas")]
    fresh = [e for e in entries if time.time() - e["heartbeat"] < 3]
    return len(fresh) >= 2 and all(e["version"] >= version for e in fresh)


def test_redis_down_10s_then_back_empty_under_churn(cluster):
    envoy = cluster.envoy("edge-1")
    cluster.wait_routed(envoy, cluster.stable)
    traffic, churn, watch = Traffic(cluster, envoy), Churn(cluster), VersionWatch(envoy)
    for t in (traffic, churn, watch):
        t.start()
    time.sleep(1.0)
    cluster.redis.stop()
    time.sleep(10)
    back = time.monotonic()
    cluster.redis.start()  # no persistence: it comes back empty
    wait_until(lambda: cluster.redis_version() > 0, 2.5, what="the leader rewrote the set")
    discoverer_back = time.monotonic() - back
    rewritten = cluster.redis_version()
    wait_until(lambda: (watch.current() or 0) >= rewritten, 2.5, what="Envoy's replica resynced")
    replica_back = time.monotonic() - back
    wait_until(lambda: replicas_past(cluster, rewritten), 3.5, what="both replicas resynced")
    churn.stop()
    time.sleep(1.0)
    final = cluster.redis_version()
    wait_until(lambda: watch.current() == final, 5, what="Envoy on the final version")
    traffic.stop()
    watch.stop()
    print(f"\nFIGURE redis-down: discoverer back in {discoverer_back:.2f}s, Envoy's replica in {replica_back:.2f}s; "
          f"{traffic.ok} TLS connections, {traffic.failed} failed; {churn.changes} DNS changes")
    assert discoverer_back < 2.0 and replica_back < 2.0, (discoverer_back, replica_back)
    assert traffic.failed == 0, traffic.failures[:10]
    assert traffic.ok > 100
    assert not watch.backwards, f"Envoy was sent older versions: {watch.backwards[:5]}"
    assert cluster.redis_routes() == {sni(b.id) for b in cluster.in_dns}


# routing -> Cluster arguments; FCDS: the Envoy reconnects with its chains' versions and keeps its listener
KILL_MODES = {rs.SNI_CLUSTERS: {},
              "fcds": {"routing": rs.FILTER_CHAINS, "xds_args": ["--fcds"], "envoy_args": ["--fcds"]}}


def chain_updates(cluster: Cluster, envoy) -> dict[str, int]:
    """FCDS: per stable builder, how often Envoy applied its chain; and the listener's full replacements."""
    out = {b.id: envoy.stat(f"filter_chain_manager.{sni(b.id)}.update_success") for b in cluster.stable}
    out["listener replaced"] = (envoy.stat("listener_manager.listener_modified")
                                - envoy.stat("listener_manager.listener_in_place_updated"))
    return out


@pytest.mark.parametrize("mode", list(KILL_MODES))
def test_replica_killed_envoy_moves_and_no_connection_drops(tmp_path, redis_server, dns_server, procs, mode):
    cluster = Cluster(tmp_path, redis_server, dns_server, procs, **KILL_MODES[mode])
    envoy = cluster.envoy("edge-1")
    cluster.wait_routed(envoy, cluster.stable)
    with cluster.redis.client() as c:
        holder = wait_until(lambda: json.loads(c.hget("{xds}:envoys", "edge-1") or "{}").get("replica"), 10)
    victim = cluster.replicas[int(holder[1:]) - 1]
    raw = socket.create_connection(("127.0.0.1", envoy.listener_port), timeout=5)
    conn = cluster.ctx.wrap_socket(raw, server_hostname=sni(cluster.stable[0].id))
    reader = conn.makefile("rb")
    assert reader.readline().startswith(b"builder=")
    traffic = Traffic(cluster, envoy)
    traffic.start()
    chains = chain_updates(cluster, envoy)
    victim.kill(signal.SIGKILL)
    other = "r2" if holder == "r1" else "r1"
    killed_at = time.monotonic()
    with cluster.redis.client() as c:
        wait_until(lambda: json.loads(c.hget("{xds}:envoys", "edge-1") or "{}").get("replica") == other, 15,
                   what="Envoy reconnected to the other replica")
    print(f"\nFIGURE replica-kill: Envoy on the other replica {time.monotonic() - killed_at:.2f}s after the kill")
    cluster.set_dns(cluster.in_dns + [cluster.pool[0]])
    wait_until(lambda: cluster.reach(envoy, cluster.pool[0].id), 5, what="a new builder routed after the kill")
    for i in range(5):
        conn.sendall(f"still here {i}\n".encode())
        assert reader.readline() == f"still here {i}\n".encode()
    conn.close()
    traffic.stop()
    print(f"\nFIGURE replica-kill ({mode}): {traffic.ok} TLS connections during the move, {traffic.failed} failed")
    assert traffic.failed == 0, traffic.failures[:10]
    if mode == "fcds":  # the new replica did not resend the chains the Envoy had, nor replace its listener
        assert chain_updates(cluster, envoy) == chains
