"""A leader cut from the primary (issue 20, item 4): a standby near the primary writes within
the lease TTL + 1 s, and not one write of the old leader lands (fencing).

The lab: the Redis primary in ord, the leader in syd (180 ms away), a standby in ord. At the
cut a builder appears in every region's DNS: the old leader sees it too and tries to write,
but its commands are held in the partition and delivered at the heal, with its old epoch.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from harness.regions import Lab, LabSpec
from harness.wait import wait_until
from shared.connect import aclose, connect
from shared.keys import Keys
from shared.store import Store

from .conftest import lab_or_skip

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]
NEW = ("01eeeeeeeeeeee", "fdaa:0:1::eee")


def changes(lab: Lab) -> list:
    async def read():
        client = connect(lab.primary_url, name="tests")
        try:
            return await Store(client, Keys()).recent_changes(1000)
        finally:
            await aclose(client)

    return asyncio.run(read())


@pytest.fixture
def far_leader(tmp_path):
    lab = lab_or_skip(tmp_path, LabSpec(leader="syd"))
    try:
        yield lab
    finally:
        lab.close()


def test_a_standby_near_the_primary_writes_within_the_ttl_and_the_old_leader_is_fenced(far_leader):
    lab = far_leader
    old = changes(lab)
    epochs = {c.epoch for c in old}
    assert len(epochs) == 1, "syd's discoverer wrote every version so far"
    epoch = epochs.pop()
    assert not lab.discoverers["ord"].log_has("leadership won")  # the negative check: ord stands by

    cut_at, cut_wall = time.monotonic(), lab.wan.cut("ord", "syd")
    lab.set_dns({**lab.builders, "ord": [*lab.builders["ord"], NEW]})
    lab.discoverers["ord"].wait_for_log("leadership won", lab.spec.lease_ttl + 5)
    wait_until(lambda: any(c.epoch > epoch for c in changes(lab)), 10, what="a write by the new leader")
    took = time.monotonic() - cut_at
    first_new = min(c.written_at for c in changes(lab) if c.epoch > epoch)
    lab.discoverers["syd"].wait_for_log("leadership lost", 10)
    lab.discoverers["syd"].wait_for_log("as a standby", 10)  # the cut-off standby says so

    lab.wan.heal("ord", "syd")
    lab.discoverers["syd"].wait_for_log("reachable again", 15)  # whatever it held in the partition has landed
    late = [c for c in changes(lab) if c.epoch == epoch and c.written_at > cut_wall]
    print(f"leader cut: ord's standby wrote {took:.2f}s after the cut (lease TTL {lab.spec.lease_ttl:g}s; "
          f"first write at {first_new - cut_wall:.2f}s by Redis' clock); {len(late)} old-leader writes landed")
    assert late == [], late
    assert took <= lab.spec.lease_ttl + 1.0, f"the standby wrote {took:.2f}s after the cut"
