"""A far provisioner waits about two round trips (issue 20, item 3).

The lab: the leader and the Redis primary in ord; syd 180 ms away with a replica, an
xds-server reading it and an Envoy; ord's Envoy too (both must ACK: ``--region-scope all``).
``xdsctl register --wait`` for a syd builder, run in ord against the primary, and in syd
against the primary (through the WAN) with ``--redis-read-url`` its replica
(``harness.lab_runs.far_provisioner``): the far one costs at most 3 RTT more. Compared: the
command's own ``wait_ms`` (from its first Redis call, connection set-up included, to its
answer); the interpreter's start-up is the same in both regions and the noisiest part of the
wall time on a loaded machine (recorded too).
"""
from __future__ import annotations

import pytest

from harness.lab_runs import far_provisioner

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_a_far_provisioner_waits_at_most_three_round_trips_more(lab_of):
    got = far_provisioner(lab_of(), runs=5)
    print(got)
    assert got["acked_by"] == ["ord-envoy1", "syd-envoy1"]
    assert got["extra_rtt"] <= 3.0
