"""Only the named Fly apps are builders, end to end with real processes.

Fly's ``_instances.internal`` lists every started machine of the organisation. Here the DNS
stand-in answers machines of four apps, each machine a TLS listener on the builder port that
would answer its own SNI: the builders, the control plane's own ADS replica, the edge Envoy
and a database. The discoverer runs with ``--app builders``; through a real Envoy every
builder is reachable and no other machine is, although each listens and is in the allow-list.
"""
from __future__ import annotations

import pytest

from shared.keys import Keys
from tests.support.envoy import EnvoyProc, insecure_context, start_backends, tls_reach
from tests.support.procs import free_port, wait_until
from tools.flyzone import FlyBuilder
from tools.tls_backend import client_context

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
BUILDERS = [FlyBuilder("b0000000000001", "builders", "127.0.0.2", "ord"),
            FlyBuilder("b0000000000002", "builders", "127.0.0.3", "ams")]
OTHERS = [FlyBuilder("c0000000000001", "flyxds-xds", "127.0.0.4", "ord"),  # the control plane's own machine
          FlyBuilder("e0000000000001", "flyxds-edge", "127.0.0.5", "ord"),
          FlyBuilder("d0000000000001", "pg-main", "127.0.0.6", "ord")]


def sni(machine: FlyBuilder) -> str:
    return f"{machine.id}.builders.internal"


def test_only_machines_of_the_builder_apps_are_reachable(tmp_path, redis_server, dns_server, procs):
    port = free_port("127.0.0.2")
    certs = tmp_path / "certs"
    start_backends(procs, certs, {sni(m): (m.ip, port) for m in BUILDERS + OTHERS})
    dns_server.set_builders(BUILDERS + OTHERS)
    common = ["--redis-url", redis_server.url]
    procs.start("discoverer", [*common, "--source", "fly", "--app", "builders", "--dns-server", dns_server.addr,
                               "--builder-port", str(port), "--poll-interval", "0.1"])
    ads = free_port()
    procs.start("xds-server", [*common, "--listen", f"127.0.0.1:{ads}", "--routing", "sni_cluster"], label="xds")
    envoy = EnvoyProc(tmp_path / "envoy", node_id="edge-1", ads=f"127.0.0.1:{ads}", routing="sni_cluster")
    procs.procs.append(envoy.start().proc)
    ctx = client_context(certs)
    for m in BUILDERS:
        wait_until(lambda: tls_reach(envoy.listener_port, sni(m), ctx) == sni(m), 20, what=f"builder {m.id}")
    routes = {k.decode() for k in redis_server.client().hkeys(Keys().routes)}
    assert routes == {sni(m) for m in BUILDERS}
    for m in OTHERS:
        assert tls_reach(envoy.listener_port, sni(m), insecure_context()) is None, f"{m.app} machine reachable"
    assert envoy.clusters() == {sni(m) for m in BUILDERS}
