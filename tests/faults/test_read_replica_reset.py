"""``xds-server --redis-read-url`` when the read replica goes back in time, with real redis-servers.

The follower asks the primary before it takes a replica's older set as a reset (follow.py
``_reset_accepted``): while the primary cannot answer, it keeps serving its version; once the
primary is behind too, it accepts the reset ``--accept-reset-after`` seconds after it last asked.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from harness.procs import free_port, scrape, wait_until
from harness.redis_ha import HAVE_REDIS7, SKIP_REASON, Node, synced
from harness.writer import acquire
from shared.connect import aclose, connect
from shared.keys import Keys
from shared.model import Builder
from shared.store import Store

pytestmark = [pytest.mark.skipif(not HAVE_REDIS7, reason=SKIP_REASON), pytest.mark.timeout(90)]
ACCEPT_AFTER = 2.0  # --accept-reset-after


def builder(name: str) -> Builder:
    return Builder(name, "app", "ord", "127.0.0.2", 443, f"{name}.builders.internal", 1.0)


async def write(url: str, names: str, holder: str) -> int:
    """One fenced write per name, as a discoverer would; the last version."""
    client = connect(url, name="tests")
    try:
        store = Store(client, Keys())
        lease = await acquire(store, holder, 60_000)
        version = lease.version
        for name in names:
            version = await store.apply(lease, version, [builder(name)], [])
        return version
    finally:
        await aclose(client)


@pytest.fixture
def redis_pair(tmp_path):
    primary = Node(tmp_path / "redis", "primary").start()
    nodes = [primary]
    try:
        nodes.append(Node(tmp_path / "redis", "read", ["--replicaof", "127.0.0.1", str(primary.port)]).start())
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def served(metrics_port: int) -> tuple[int, int]:
    m = scrape(metrics_port)
    return int(m["xds_version"]), int(m["xds_redis_source_version"])


async def test_the_primary_decides_whether_a_read_replica_that_went_back_is_a_reset(redis_pair, procs):
    primary, read = redis_pair
    assert await write(f"redis://{primary.addr}/0", "abcde", "d1") == 5
    wait_until(lambda: synced(read, primary), 10, what="the read replica in sync")
    metrics = free_port()
    xds = procs.start("xds-server", ["--redis-url", f"redis://{primary.addr}/0", "--redis-read-url",
                                     f"redis://{read.addr}/0", "--listen", f"127.0.0.1:{free_port()}",
                                     "--metrics-listen", f"127.0.0.1:{metrics}", "--replica-id", "r1",
                                     "--accept-reset-after", str(ACCEPT_AFTER)])
    wait_until(lambda: served(metrics) == (5, 5), 15, what="the replica serving version 5")

    # the read replica loses everything and restarts at version 1 (it and its discoverer lost their state),
    # and the primary is down: it cannot say whether it is behind too
    with read.client() as c:
        c.replicaof("NO", "ONE")
        c.flushall()
    primary.kill()
    behind_at = time.monotonic()
    assert await write(f"redis://{read.addr}/0", "z", "d2") == 1
    wait_until(lambda: served(metrics) == (5, 1), 10, what="the replica reading version 1, serving 5")
    xds.wait_for_log("the primary cannot say", ACCEPT_AFTER + 5)
    # two more reset waits ran out, each asking the primary in vain: a reset could have been taken
    wait_until(lambda: xds.log().count("the primary cannot say") >= 3, 3 * ACCEPT_AFTER + 10,
               what="three reset waits asking the primary")
    assert served(metrics) == (5, 1), "no reset while the primary cannot say"
    assert time.monotonic() - behind_at > 2 * ACCEPT_AFTER

    # the primary is back, empty: behind us too, so the replica's set is a reset, accepted the next time
    # the follower asks, --accept-reset-after after its last ask
    primary.start()
    back_at = time.monotonic()
    wait_until(lambda: served(metrics) == (1, 1), ACCEPT_AFTER + 8, interval=0.1, what="the reset accepted")
    took = time.monotonic() - back_at
    print(f"\nFIGURE read-replica-reset: kept version 5 for {back_at - behind_at:.1f}s with the primary down; "
          f"reset accepted {took:.1f}s after it came back behind (--accept-reset-after {ACCEPT_AFTER})")
    assert took < ACCEPT_AFTER + 4
    assert xds.log_has("accepting its set as a reset") and xds.alive
