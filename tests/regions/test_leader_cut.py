"""A leader cut from the primary (issue 20, item 4): a standby near the primary writes within
the lease TTL + 1 s, and not one write of the old leader lands (fencing).

The lab: the Redis primary in ord, the leader in syd (180 ms away), a standby in ord. At the
cut a builder appears in every region's DNS: the old leader sees it too and tries to write,
but its commands are held in the partition and delivered at the heal, with its old epoch
(``harness.lab_runs.leader_cut``). The cut-off standby says so in its log.
"""
from __future__ import annotations

import pytest

from harness.lab_runs import leader_cut
from harness.regions import LabSpec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


def test_a_standby_near_the_primary_writes_within_the_ttl_and_the_old_leader_is_fenced(lab_of):
    got = leader_cut(lab_of(LabSpec(leader="syd")), new=("01eeeeeeeeeeee", "fdaa:0:1::eee"))
    print(got)
    assert len(got["epochs_before"]) == 1 and not got["standby_led_before"]  # syd led every write so far
    assert got["old_leader_writes_landed"] == 0
    # the TTL + 1 s is the bench's (bench_regions --parts leader: 3.52 s with a 4 s TTL, recorded);
    # a loaded machine may add a poll and a slow write
    assert got["standby_wrote_after_s"] <= got["lease_ttl_s"] + 3.0
