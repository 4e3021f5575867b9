"""A real Envoy 1.40 on ``xdsctl bootstrap --delta`` (wildcard delta CDS and LDS over ADS), the
configuration docs/performance.md recommends, in the modes that use it: it routes, refuses a removed
builder within 1 s, and make-before-break holds through churn (no NACK, no failed connection)."""
from __future__ import annotations

import json
import socket
import threading

import pytest

from harness.procs import wait_until
from shared import resources as rs

from .fleet import Fleet, bid, eventually, sni

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
REJECTED = ("cluster_manager.cds.update_rejected", "listener_manager.lds.update_rejected")
# tcp_proxy found a chain but not its cluster: in filter_chains, where a name without a chain never gets
# that far, a count above 0 means a chain arrived before its cluster or outlived it (make before break broken)
NO_CLUSTER = f"tcp.{rs.TCP_STAT_PREFIX}.downstream_cx_no_route"


@pytest.fixture(scope="module", params=("filter_chains", "sni_cluster"))
def fleet(request, tmp_path_factory):
    with Fleet(tmp_path_factory.mktemp(f"delta-{request.param}"), request.param) as f:
        yield f


def status(fleet: Fleet, node: str) -> dict:
    """The Envoy's entry in {xds}:envoys."""
    with fleet.redis.client() as c:
        return json.loads(c.hget("{xds}:envoys", node) or "{}")


class Traffic(threading.Thread):
    """New TLS connections to builders that stay in the set, one after another, until stopped."""

    def __init__(self, fleet: Fleet, envoy, names: list[str]):
        super().__init__(daemon=True)
        self.fleet, self.envoy, self.names = fleet, envoy, names
        self.ok, self.failures = 0, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for name in self.names:
                got = self.fleet.reach(self.envoy, name, timeout=3)
                if got == name:
                    self.ok += 1
                else:
                    self.failures.append((name, got))

    def stop(self) -> None:
        self.done.set()
        self.join(15)


def test_a_delta_envoy_routes_refuses_removed_builders_and_never_breaks(fleet):
    stable = [fleet.record(bid(n)) for n in (1, 2)]
    first, second = [fleet.record(bid(n)) for n in range(3, 8)], [fleet.record(bid(n)) for n in range(8, 13)]
    fleet.set_builders(stable + first)
    envoy = fleet.envoy("delta-edge", delta=True)
    for r in stable + first:
        wait_until(lambda r=r: fleet.reach(envoy, sni(r["id"])) == sni(r["id"]), 15, what=f"{r['id']} routed")
    assert wait_until(lambda: status(fleet, "delta-edge").get("kind"), 5, what="the Envoy's status") == "delta"

    held = socket.create_connection(("127.0.0.1", envoy.listener_port), timeout=5)
    conn = fleet.ctx.wrap_socket(held, server_hostname=sni(stable[0]["id"]))
    reader = conn.makefile("rb")
    assert reader.readline().strip() == f"builder={sni(stable[0]['id'])}".encode()
    traffic = Traffic(fleet, envoy, [sni(r["id"]) for r in stable])
    traffic.start()
    try:
        for i in range(20):  # each change adds five builders and removes five, in one version
            now = stable + (second if i % 2 == 0 else first)
            fleet.set_builders(now)
            for r in now:  # a builder of the new set is routed at once, and stays routed
                wait_until(lambda r=r: fleet.reach(envoy, sni(r["id"])) == sni(r["id"]), 5, what=f"{r['id']} in {i}")
            conn.sendall(f"ping {i}\n".encode())
            assert reader.readline() == f"ping {i}\n".encode(), f"the long-lived connection broke at change {i}"
    finally:
        traffic.stop()
        conn.close()
    assert traffic.failures == [] and traffic.ok > 20, (traffic.ok, traffic.failures[:5])
    if fleet.mode == "filter_chains":
        assert f"{NO_CLUSTER}: 0" in envoy.admin(f"/stats?filter=^{NO_CLUSTER}$"), \
            "a connection met a chain whose cluster was missing"

    gone = sni(stable[1]["id"])
    fleet.set_builders(stable[:1] + first, wait=False)
    took = eventually(lambda: fleet.refused(envoy, gone, timeout=0.5), 3, "the removed builder refused")
    assert took < 1.0
    assert {name: envoy.stat(name) for name in REJECTED} == dict.fromkeys(REJECTED, 0), "Envoy NACKed nothing"
    entry = status(fleet, "delta-edge")
    assert entry.get("last_nack") is None and entry["acked"].get("cds") and entry["acked"].get("lds"), entry
