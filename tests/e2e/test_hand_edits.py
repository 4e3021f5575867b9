"""A hand edit of the builder set (redis-cli HDEL) is noticed, logged and undone, end to end.

redis-server, the DNS stand-in, one discoverer, one xds-server, one Envoy, TLS builders.
The keys are the leader's alone: an HDEL changes Redis but not the version, so no replica
hears of it. The leader's periodic check sees the set shrink, logs an error and writes its
set back; when the builder also leaves DNS, its removal reaches Envoy as usual.
"""
from __future__ import annotations

import pytest

from shared.keys import Keys
from tests.support.envoy import EnvoyProc, start_backends, tls_reach
from tests.support.procs import free_port, wait_until
from tools.flyzone import FlyBuilder
from tools.tls_backend import client_context

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
KEYS = Keys()
A = FlyBuilder("a0000000000001", "builder", "127.0.0.2", "ord")
B = FlyBuilder("b0000000000002", "builder", "127.0.0.3", "ord")


def sni(b: FlyBuilder) -> str:
    return f"{b.id}.builders.internal"


def test_an_hdel_by_hand_is_logged_and_rewritten_and_envoy_stays_in_step(tmp_path, redis_server, dns_server, procs):
    port = free_port("127.0.0.2")
    certs = tmp_path / "certs"
    start_backends(procs, certs, {sni(b): (b.ip, port) for b in (A, B)})
    dns_server.set_builders([A, B])
    common = ["--redis-url", redis_server.url]
    disc = procs.start("discoverer", [*common, "--source", "fly", "--app", "builder", "--dns-server", dns_server.addr,
                                      "--builder-port", str(port), "--removal-grace", "0.3"])
    ads = free_port()
    procs.start("xds-server", [*common, "--listen", f"127.0.0.1:{ads}", "--routing", "sni_cluster"], label="xds")
    envoy = EnvoyProc(tmp_path / "envoy", node_id="edge-1", ads=f"127.0.0.1:{ads}", routing="sni_cluster")
    procs.procs.append(envoy.start().proc)
    ctx = client_context(certs)
    wait_until(lambda: tls_reach(envoy.listener_port, sni(B), ctx) == sni(B), 20, what="B through Envoy")
    r = redis_server.client()

    r.hdel(KEYS.builders, B.id)  # what an operator might do to drop B by hand
    disc.wait_for_log("changed by hand", 3)
    assert "ERROR" in next(line for line in disc.log().splitlines() if "changed by hand" in line)
    wait_until(lambda: r.hexists(KEYS.builders, B.id), 3, what="B written back")
    assert tls_reach(envoy.listener_port, sni(B), ctx) == sni(B)

    r.hdel(KEYS.builders, B.id)  # again, and this time B also leaves DNS before any check
    dns_server.set_builders([A])
    wait_until(lambda: envoy.clusters() == {sni(A)}, 10, what="Envoy drops B")
    assert tls_reach(envoy.listener_port, sni(A), ctx) == sni(A)
    assert not r.hexists(KEYS.builders, B.id) and disc.log().count("changed by hand") >= 2
