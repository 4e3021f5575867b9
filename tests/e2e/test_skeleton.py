"""The walking skeleton, end to end with real processes only.

redis-server, a DNS server process, two discoverers, one xds-server, one
Envoy from ``xdsctl bootstrap``, two TLS builders on 127.0.0.2 and 127.0.0.3
(same port). Clients reach builders by SNI; unknown names are refused; DNS
changes show within 1 s.
"""
from __future__ import annotations


import pytest

from harness.envoy import REFUSED, EnvoyProc, insecure_context, start_backends, tls_reach
from harness.procs import free_port, wait_until
from tools.flyzone import FlyBuilder
from tools.tls_backend import client_context

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
DOMAIN = "builders.internal"


def sni(bid: str) -> str:
    return f"{bid}.{DOMAIN}"


def test_dns_to_envoy_to_builder(tmp_path, redis_server, dns_server, procs):
    port = free_port("127.0.0.2")
    certs = tmp_path / "certs"
    a, b, c = (FlyBuilder(bid, "builder", ip, "ord") for bid, ip in
               (("a0000000000001", "127.0.0.2"), ("b0000000000002", "127.0.0.3"), ("c0000000000003", "127.0.0.4")))
    start_backends(procs, certs, {sni(x.id): (x.ip, port) for x in (a, b, c)})
    dns_server.set_builders([a, b])
    common = ["--redis-url", redis_server.url]
    for n in (1, 2):
        procs.start("discoverer", [*common, "--source", "fly", "--dns-server", dns_server.addr, "--app", "builder",
                                   "--sni-template", "{id}.builders.internal", "--builder-port", str(port),
                                   "--poll-interval", "0.1", "--id", f"d{n}"], label=f"discoverer{n}")
    ads_port = free_port()
    procs.start("xds-server", [*common, "--listen", f"127.0.0.1:{ads_port}", "--routing", "filter_chains",
                               "--listener-port", "10443"], label="xds")
    envoy = EnvoyProc(tmp_path / "envoy", node_id="edge-1", ads=f"127.0.0.1:{ads_port}", region="ord")
    procs.procs.append(envoy.start().proc)
    ctx = client_context(certs)
    wait_until(lambda: tls_reach(envoy.listener_port, sni(a.id), ctx) == sni(a.id), 15, what="A reachable")
    assert tls_reach(envoy.listener_port, sni(b.id), ctx) == sni(b.id)
    assert tls_reach(envoy.listener_port, sni("nobody00000000"), insecure_context()) is REFUSED
    assert tls_reach(envoy.listener_port, sni(c.id), insecure_context()) is REFUSED

    # how fast is measured in bench/ (bench_convergence); here: that it happens, and how
    dns_server.set_builders([a])
    outcomes = []
    wait_until(lambda: outcomes.append(tls_reach(envoy.listener_port, sni(b.id), insecure_context(), timeout=0.5))
               or outcomes[-1] is REFUSED, 10, interval=0.02, what="B refused")
    assert set(outcomes[:-1]) <= {sni(b.id)}, f"routed until refused, never a timeout: {outcomes}"

    dns_server.set_builders([a, c])
    wait_until(lambda: tls_reach(envoy.listener_port, sni(c.id), ctx, timeout=0.5) == sni(c.id),
               10, interval=0.02, what="C reachable")
    assert tls_reach(envoy.listener_port, sni(a.id), ctx) == sni(a.id)
