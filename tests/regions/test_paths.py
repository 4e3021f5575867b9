"""The paths when nothing fails (issue 20's first two numbers), in the lab: ord holds the Redis
primary, syd (180 ms RTT) a replica; an xds-server and an Envoy in each region.

- An intent appended in syd reaches the primary in one one-way trip; ord's Envoy routes it then,
  syd's after one more (its replica). Target (bench/bench_regions.py records it): p50 <= the
  one-way trips + 20 ms. Asserted here with a margin the loaded CI machine allows but a third
  one-way trip (90 ms) does not: each region strictly under its trips plus one.
- A DNS change, with the leader near the primary and far from it: each region's Envoy routes
  it within a full poll (the target uses half: the change lands at a random phase) plus the
  one-way trips of its path plus a 100 ms margin.
"""
from __future__ import annotations

import pytest

from harness.lab_runs import dns_latency, intent_latency
from harness.regions import LabSpec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_an_intent_from_a_far_region_routes_after_its_one_way_trips(lab_of):
    lab = lab_of()
    one_way_ms = lab.rtt("ord", "syd") * 500
    got = intent_latency(lab, "syd", n=10)
    print(got)
    assert got["ord_p50_ms"] < 2 * one_way_ms, "syd -> primary (ord), then ord's Envoy: one trip"
    assert got["syd_p50_ms"] < 3 * one_way_ms, "syd -> primary, then primary -> syd's replica: two trips"


@pytest.mark.parametrize("leader", ["ord", "syd"])
def test_a_dns_change_routes_in_every_region_with_the_leader_near_or_far(lab_of, leader):
    lab = lab_of(LabSpec(leader=leader))
    one_way_ms = lab.rtt("ord", "syd") * 500
    got = dns_latency(lab, n=8)
    print(got)
    assert got["leader"] == leader
    to_primary = 0 if leader == "ord" else 1  # the leader's fenced write crosses the WAN when it is far
    poll_ms = lab.spec.poll_interval * 1000
    assert got["ord_p50_ms"] <= poll_ms + to_primary * one_way_ms + 100
    assert got["syd_p50_ms"] <= poll_ms + (to_primary + 1) * one_way_ms + 100, "and the replica's trip to syd"
