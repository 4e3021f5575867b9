"""Routing guarantees with real Envoy 1.40 and real TLS, in every routing mode.

1 the right builder (20 at once, one over IPv6); 2 isolation; 3 no collateral
damage to a long-lived connection under churn; 4 removal within 1 s;
5 region views; 6 on_demand waits for a late builder and holds only what it used;
7 filter_chains over FCDS updates the listener in place, and a builder change
that keeps its SNI does not touch the listener.
"""
from __future__ import annotations

import json
import socket
import subprocess
import threading

import pytest

from harness.envoy import REFUSED, EnvoyProc, insecure_context, raw_reach, tls_reach
from harness.procs import script, wait_until
from shared import resources as rs

from .fleet import N_BACKENDS, Fleet, bid, eventually, sni

MODES = (rs.FILTER_CHAINS, rs.SNI_CLUSTERS, rs.ON_DEMAND, rs.FILTER_CHAINS_FCDS)
IDS = {rs.FILTER_CHAINS_FCDS: "fcds"}
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module", params=MODES, ids=lambda m: IDS.get(m, m))
def fleet(request, tmp_path_factory):
    with Fleet(tmp_path_factory.mktemp(IDS.get(request.param, request.param)), request.param) as f:
        yield f


@pytest.fixture(scope="module")
def edge(fleet):
    """One Envoy in ord on the region-scope 'all' replica."""
    return fleet.envoy("edge-ord", scope="all", region="ord")


def reach(fleet, envoy, name, ctx=None, timeout=2.0):
    return fleet.reach(envoy, name, ctx, timeout)


def all_backends(fleet):
    return [fleet.record(bid(n)) for n in range(N_BACKENDS)]


def test_right_builder_for_20_at_once_including_ipv6(fleet, edge):
    fleet.set_builders(all_backends(fleet))
    names = [sni(bid(n)) for n in range(N_BACKENDS)]
    wait_until(lambda: reach(fleet, edge, names[0]) == names[0], 10, what="the IPv6 builder")
    results = {}

    def one(name):
        results[name] = reach(fleet, edge, name, timeout=5)

    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {n: n for n in names}


@pytest.mark.parametrize("name", [
    "xds_control_plane", "xds_control_plane." + "builders.internal", "127.0.0.1", "::1", "localhost",
    "*.builders.internal", "nobody0000000.builders.internal", "builders.internal", "admin",
    "b0000000000001.builders.internal.evil.com", "evil.com", "b0000000000001", "no-route.invalid",
])
def test_isolation_names_reach_nothing(fleet, edge, name):
    fleet.set_builders(all_backends(fleet))
    wait_until(lambda: reach(fleet, edge, sni(bid(1))) == sni(bid(1)), 10)
    assert fleet.refused(edge, name, raw=True)


def test_isolation_no_sni_and_no_tls(fleet, edge):
    fleet.set_builders(all_backends(fleet))
    wait_until(lambda: reach(fleet, edge, sni(bid(1))) == sni(bid(1)), 10)
    assert raw_reach(edge.listener_port, None) is REFUSED
    with socket.create_connection(("127.0.0.1", edge.listener_port), timeout=3) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
    assert data == b"", "plain TCP is closed, not answered (a timeout fails here too)"


# Envoy 1.40 (tls_inspector) lowercases the SNI before any matching: a name in other case reaches the
# same builder. A trailing dot is part of the name: no chain or cluster matches it, so it is refused
# at once in every mode (docs/routing.md).
@pytest.mark.parametrize("variant, routed", [(str.upper, True), (lambda s: s[0].upper() + s[1:], True),
                                             (lambda s: s + ".", False), (lambda s: s.upper() + ".", False)],
                         ids=["upper", "capitalized", "trailing-dot", "upper-trailing-dot"])
def test_case_is_ignored_and_a_trailing_dot_is_refused(fleet, edge, variant, routed):
    fleet.set_builders(all_backends(fleet))
    name = sni(bid(3))
    wait_until(lambda: reach(fleet, edge, name) == name, 10)
    if routed:
        assert raw_reach(edge.listener_port, variant(name)) == name
    else:
        assert raw_reach(edge.listener_port, variant(name)) is REFUSED


def test_long_lived_connection_survives_50_changes(fleet, edge):
    base = [fleet.record(bid(1))]
    fleet.set_builders(base)
    name = sni(bid(1))
    wait_until(lambda: reach(fleet, edge, name) == name, 10)
    raw = socket.create_connection(("127.0.0.1", edge.listener_port), timeout=5)
    conn = fleet.ctx.wrap_socket(raw, server_hostname=name)
    reader = conn.makefile("rb")
    assert reader.readline().strip() == f"builder={name}".encode()
    others = [fleet.record(bid(n)) for n in range(2, 12)]  # B..K
    for i in range(50):
        fleet.set_builders(base + (others if i % 2 == 0 else []))
        payload = f"ping {i}\n".encode()
        conn.sendall(payload)
        assert reader.readline() == payload, f"echo broke after change {i}"
    conn.close()


def test_removed_builder_refused_within_1s(fleet, edge):
    fleet.set_builders(all_backends(fleet))
    name = sni(bid(5))
    wait_until(lambda: reach(fleet, edge, name) == name, 10)
    fleet.set_builders([r for r in all_backends(fleet) if r["id"] != bid(5)], wait=False)
    took = eventually(lambda: fleet.refused(edge, name, timeout=0.5), 3, "removed builder refused")
    assert took < 1.0
    fleet.refused_in_the_end(edge, name)


def test_region_views(fleet):
    fleet.set_builders(all_backends(fleet))
    ord_env = fleet.envoy("local-ord", scope="local", region="ord")
    ams_env = fleet.envoy("local-ams", scope="local", region="ams")
    ord_b, ams_b = sni(bid(1)), sni(bid(2))  # odd ids are ord, even are ams
    wait_until(lambda: reach(fleet, ord_env, ord_b) == ord_b, 10)
    wait_until(lambda: reach(fleet, ams_env, ams_b) == ams_b, 10)
    assert fleet.refused(ord_env, ams_b, timeout=1)
    assert fleet.refused(ams_env, ord_b, timeout=1)
    fleet.refused_in_the_end(ord_env, ams_b)
    everywhere = fleet.envoy("all-ams", scope="all", region="ams")
    wait_until(lambda: reach(fleet, everywhere, ord_b) == ord_b, 10)
    assert reach(fleet, everywhere, ams_b) == ams_b


def test_on_demand_waits_for_a_late_builder_and_holds_only_what_it_used(fleet):
    if fleet.mode != "on_demand":
        pytest.skip("on_demand only")
    many = [fleet.record(f"c{n:013x}", ip=f"127.0.1.{n + 1}") for n in range(97)]
    served = [fleet.record(bid(n)) for n in (1, 2, 3)]
    late = fleet.record(bid(4))
    fleet.set_builders(many + served)
    envoy = fleet.envoy("ondemand-ord", scope="all", region="ord")
    for r in served:
        assert reach(fleet, envoy, sni(r["id"]), timeout=5) == sni(r["id"])
    assert envoy.clusters() == {sni(r["id"]) for r in served}
    result = {}

    def connect():
        result["got"] = reach(fleet, envoy, sni(late["id"]), timeout=8)

    attempts = envoy.stat("tcp.builders.on_demand_cluster_attempt")
    t = threading.Thread(target=connect)
    t.start()
    # the connection is held, asking for a cluster that does not exist yet: only then does the builder appear
    wait_until(lambda: envoy.stat("tcp.builders.on_demand_cluster_attempt") > attempts, 5,
               what="the connection asking for its cluster")
    fleet.set_builders(many + served + [late], wait=False)
    t.join(10)
    assert result["got"] == sni(late["id"]), result
    # held until routed (a connection past the wait would have been refused); how fast is bench/'s
    assert envoy.stat("tcp.builders.on_demand_cluster_success") >= 4


def listener_counts(envoy) -> tuple[int, int]:
    """(listener updates done in place, full replacements): Envoy counts both as ``listener_modified``."""
    in_place = envoy.stat("listener_manager.listener_in_place_updated")
    return in_place, envoy.stat("listener_manager.listener_modified") - in_place


def test_fcds_updates_the_listener_in_place_and_a_known_sni_leaves_it_alone(fleet, edge):
    if fleet.mode != rs.FILTER_CHAINS_FCDS:
        pytest.skip("filter_chains over FCDS only")
    base = [fleet.record(bid(n)) for n in range(1, 6)]
    fleet.set_builders(base)
    wait_until(lambda: reach(fleet, edge, sni(bid(5))) == sni(bid(5)), 10)
    in_place, replaced = listener_counts(edge)
    # a new SNI: one matcher entry (the listener, updated in place) and its chain
    fleet.set_builders(base + [fleet.record(bid(6))])
    wait_until(lambda: reach(fleet, edge, sni(bid(6))) == sni(bid(6)), 5)
    now_in_place, now_replaced = listener_counts(edge)
    assert now_in_place > in_place and now_replaced == replaced, "a full listener replacement drains everything"
    # a known SNI moves: its cluster changes; the listener and every chain stay as they are
    lds = edge.stat("listener_manager.lds.update_success")
    cds = edge.stat("cluster_manager.cds.update_success")
    chain = edge.stat(f"filter_chain_manager.{sni(bid(5))}.update_success")
    moved = fleet.record(bid(5), ip="127.0.0.250")
    fleet.set_builders(base[:-1] + [moved, fleet.record(bid(6))], wait=False)
    wait_until(lambda: edge.stat("cluster_manager.cds.update_success") > cds, 5, what="the moved builder's cluster")
    # the proof that anything else could have come: a later change on the same stream that does touch the
    # listener (a new SNI: one in-place update), routed after; whatever the move owed would have gone first
    fleet.set_builders(base[:-1] + [moved, fleet.record(bid(6)), fleet.record(bid(7))], wait=False)
    wait_until(lambda: reach(fleet, edge, sni(bid(7))) == sni(bid(7)), 10, what="the later SNI routed")
    assert edge.stat("listener_manager.lds.update_success") == lds + 1, "only the later SNI's listener update"
    assert edge.stat(f"filter_chain_manager.{sni(bid(5))}.update_success") == chain
    assert reach(fleet, edge, sni(bid(6))) == sni(bid(6))


def test_fcds_refuses_a_state_of_the_world_envoy_where_operators_look(fleet):
    if fleet.mode != rs.FILTER_CHAINS_FCDS:
        pytest.skip("filter_chains over FCDS only")
    sotw = EnvoyProc(fleet.dir / "envoys", node_id="sotw-edge", ads=fleet.ads["all"], region="ord",
                     routing=rs.FILTER_CHAINS)  # a bootstrap made without --fcds: state of the world
    sotw.start(wait_ready=False)
    fleet.procs.procs.append(sotw.proc)

    def envoys(*args: str) -> str:
        return subprocess.run([str(script("xdsctl")), "--redis-url", fleet.redis.url, *args, "envoys"],
                              capture_output=True, text=True, timeout=30, check=True).stdout

    def refused():
        entry = json.loads(envoys("--json"))["envoys"].get("sotw-edge") or {}
        return entry.get("state") == "refused" and entry
    entry = wait_until(refused, 10, what="the refused Envoy in xdsctl envoys")
    assert "delta" in entry["refused"]["detail"] and "--fcds" in entry["refused"]["detail"]
    assert "refused" in envoys()
    log = (fleet.dir / "logs" / "xds-all.log").read_text()
    assert "stream refused" in log and "'sotw-edge' asked for state-of-the-world" in log
    sotw.stop()
