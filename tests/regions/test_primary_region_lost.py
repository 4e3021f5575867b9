"""The primary's region lost (issue 20, item 5): sentinels in three regions promote another
region's replica; discoverers and xds-servers follow through ``redis+sentinel://``.

The lab: ord (the primary, the leader), ams and syd (replicas), a sentinel in each region
(quorum 2, down-after 1 s). ord is cut from both others (held: the region is gone). A
builder appears in DNS; measured: the first route for it at syd's Envoy, against Sentinel's
down-after + the failover + 2 s (the lease, replicated to the promoted replica, runs out
meanwhile). Nothing DNS still lists is lost at syd's Envoy.
"""
from __future__ import annotations

import time

import pytest

from harness.plane import sni
from harness.regions import LabSpec
from harness.wait import wait_until

from .conftest import lab_or_skip, routes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
NEW = ("02dddddddddddd", "fdaa:0:2::ddd")
SPEC = LabSpec(regions=("ord", "ams", "syd"), sentinels=True, builders=1, envoys=1)


@pytest.fixture
def three_regions(tmp_path):
    lab = lab_or_skip(tmp_path, SPEC)
    try:
        yield lab
    finally:
        lab.close()


def routed(envoy, bid: str) -> bool:
    have = routes(envoy)
    return sni(bid) in have or bid in have


def test_sentinels_promote_another_region_and_routes_follow(three_regions):
    lab = three_regions
    syd_envoy = lab.plane.envoys[2]
    before = routes(syd_envoy)
    assert lab.master_address("syd") == lab.address("ord")
    assert not routed(syd_envoy, NEW[0])  # the negative check: not routed before it is in DNS

    lost_at = time.monotonic()
    for region in ("ams", "syd"):
        lab.wan.cut("ord", region)
    lab.set_dns({**lab.builders, "ams": [*lab.builders["ams"], NEW]})
    wait_until(lambda: lab.master_address("syd") != lab.address("ord"), 20, interval=0.05,
               what="the sentinels promoting a replica")
    promoted = time.monotonic() - lost_at
    wait_until(lambda: routed(syd_envoy, NEW[0]), 30, interval=0.05, what="syd routing the new builder")
    first_route = time.monotonic() - lost_at
    after = routes(syd_envoy)
    print(f"primary's region lost: promoted {promoted:.2f}s, first new route at syd {first_route:.2f}s "
          f"(down-after {SPEC.down_after_ms / 1000:g}s, lease TTL {SPEC.lease_ttl:g}s); "
          f"routes before {len(before)}, after {len(after)}")
    assert before <= after, f"lost: {before - after}"
    assert first_route <= promoted + SPEC.lease_ttl + 2.0
