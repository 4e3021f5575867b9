"""A region cut off from the primary says so, keeps routing, and heals (issue 20, item 2).

The lab: ord (the Redis primary, the leader) and syd (a replica, its xds-server reading it,
writing status to the primary), 180 ms apart. The ord-syd path is cut (held, as a partition)
for CUT_SECONDS while a prober connects through syd's Envoy to syd's builders and ord's DNS
gains a builder. Measured against the issue's numbers: 0 failed connections to builders syd
knew, 0 routes removed there, the first WARNING within 5 s of the cut (then again every few
seconds, naming what is cut and what is served), ``xds_primary_reachable`` 0 and
``xds_read_master_link_down_seconds`` > 0, ``xdsctl status`` in syd saying the link is down;
the new builder routed by syd's Envoy within 2 s of the heal.
"""
from __future__ import annotations

import time

import pytest

from harness.plane import sni
from harness.procs import script
from harness.wait import wait_until

from .conftest import Prober, routes, run_in

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]
CUT = "cut off from the primary"
CUT_SECONDS = 15.0  # the bench cuts for 60 s
NEW = ("01ffffffffffff", "fdaa:0:1::fff")  # appears in DNS while syd is cut off


def status_in(lab, region: str) -> str:
    out = run_in(lab, region, str(script("xdsctl")), "--redis-url", lab.redis_url(region), "status")
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_region_cut_off_says_so_keeps_routing_and_heals(lab):
    syd_xds, syd_envoy = lab.replicas["syd"], lab.plane.envoys[1]
    known = [bid for bid, _ in lab.builders["syd"]]
    before = routes(syd_envoy)
    assert {sni(b) for b in known} <= before or set(known) <= before, before
    assert lab.metrics("syd")["xds_primary_reachable"] == 1
    assert "cut off" not in status_in(lab, "syd")
    assert not syd_xds.log_has(CUT)  # the negative check: nothing said while nothing is cut

    with Prober(syd_envoy, known, lab.plane.client_context()) as prober:
        wait_until(lambda: prober.ok >= 2 * len(known), 10, what="the prober reaching syd's builders")
        cut_at = time.monotonic()
        lab.wan.cut("ord", "syd")
        syd_xds.wait_for_log(CUT, 5)
        first_warning = time.monotonic() - cut_at
        assert lab.metrics("syd")["xds_primary_reachable"] == 0
        lab.set_dns({**lab.builders, "ord": [*lab.builders["ord"], NEW]})
        wait_until(lambda: lab.metrics("ord")["xds_version"] == 2, 10, what="ord serving the new builder")
        wait_until(lambda: lab.metrics("syd")["xds_read_master_link_down_seconds"] > 0, 10,
                   what="syd's replica saying its link is down")
        assert "link to the primary is down" in status_in(lab, "syd")
        wait_until(lambda: syd_xds.log().count(CUT) >= 2, 10, what="the WARNING said again")
        wait_until(lambda: time.monotonic() - cut_at >= CUT_SECONDS or lab.metrics("syd")["xds_version"] != 1,
                   CUT_SECONDS + 2, what="the cut lasting")
        assert lab.metrics("syd")["xds_version"] == 1, "a region cut off must serve the set it had"
        during = routes(syd_envoy)
        healed_at = time.monotonic()
        lab.wan.heal("ord", "syd")
        wait_until(lambda: sni(NEW[0]) in routes(syd_envoy) or NEW[0] in routes(syd_envoy), 10,
                   what="syd's Envoy routing the new builder after the heal")
        converged = time.monotonic() - healed_at
    syd_xds.wait_for_log("the primary is reachable again", 10)
    print(f"cut {CUT_SECONDS:.0f}s: first WARNING {first_warning:.2f}s after the cut; {prober.ok} connections, "
          f"{len(prober.failed)} failed; converged {converged:.2f}s after the heal")
    assert prober.failed == [], prober.failed[:5]
    assert during >= before, f"routes removed while cut off: {before - during}"
    assert first_warning <= 5.0
    assert converged <= 2.0
