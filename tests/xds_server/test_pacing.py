"""Pushes are paced, shared and bounded: one response per interval under churn, one message for every
stream, large responses written within a budget."""
from __future__ import annotations

import asyncio
import time

from xds_server.stream import WriteBudget

from .harness import builder, sni
from .test_delta import dsync, updated
from .xds_client import CDS, LDS


async def test_a_lone_change_goes_at_once_and_a_burst_after_it_coalesces(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas(routing="sni_cluster", push_interval=1.0)
    ads = await clients(replica).delta()
    await dsync(ads, CDS, LDS)
    await ads.expect_silence(1.0)  # a quiet moment: an interval since the last push (the load)

    v1 = await writer.put(builder("b"))
    await replica.wait_version(v1)
    assert not replica.cache.held, "a change after a quiet moment is not held"
    first = await ads.recv(CDS)
    assert first.system_version_info == str(v1) and updated(first) == [sni("b")]
    await ads.ack(first)

    await writer.put(builder("c"))  # within the interval: held...
    v3 = await writer.put(builder("d"))
    await replica.wait_version(v3)
    assert replica.cache.held and ads.queue.empty(), "a change within the interval is held"
    second = await ads.recv(CDS)  # ...and sent together with the next one, once the interval has passed
    assert not replica.cache.held
    assert second.system_version_info == str(v3) and updated(second) == [sni("c"), sni("d")]
    await ads.ack(second)
    await ads.expect_silence(0.6)


async def test_a_registered_builder_is_never_held_by_pacing(writer, replicas, clients):
    """DNS churn is paced; a builder its provisioner just registered (an intent) goes out at once."""
    from dataclasses import replace

    from shared.model import SOURCE_INTENT

    await writer.put(builder("a"))
    replica = await replicas(routing="sni_cluster", push_interval=1.0)
    ads = await clients(replica).delta()
    await dsync(ads, CDS, LDS)
    await ads.expect_silence(1.0)
    await writer.put(builder("b"))  # after a quiet moment: at once
    await ads.ack(await ads.recv(CDS))
    await replica.wait_version(await writer.put(builder("c")))
    assert replica.cache.held, "DNS churn within the interval is held"
    v = await writer.put(replace(builder("d"), source=SOURCE_INTENT, registered_at=time.time()))
    await replica.wait_version(v)
    assert not replica.cache.held, "a registration is not held for the interval"
    resp = await ads.recv(CDS)
    assert resp.system_version_info == str(v) and updated(resp) == [sni("c"), sni("d")]


async def test_wildcard_streams_of_a_view_get_the_same_message(writer, replicas, clients):
    """Same bytes, nonce included: the nonce is unique to the message, not to the stream."""
    await writer.put(builder("a"))
    replica = await replicas(routing="sni_cluster")
    one, two = await clients(replica, node_id="one").delta(), await clients(replica, node_id="two").delta()
    sotw = await clients(replica, node_id="three").sotw()
    for ads in (one, two):
        await dsync(ads, CDS, LDS)
    await sotw.request(CDS)
    await sotw.ack(await sotw.recv(CDS))

    await writer.put(builder("b"))
    r1, r2 = await one.recv(CDS), await two.recv(CDS)
    assert r1.SerializeToString() == r2.SerializeToString() and r1.nonce.startswith("d")
    s1 = await sotw.recv(CDS)
    assert s1.nonce.startswith("s") and s1.nonce != r1.nonce
    for ads, resp in ((one, r1), (two, r2), (sotw, s1)):
        await ads.ack(resp)
        await ads.expect_silence(0.3)


async def test_the_write_budget_lets_large_responses_through_in_turn():
    budget = WriteBudget(100)
    first = await budget.acquire(60)
    second = asyncio.ensure_future(budget.acquire(60))
    third = asyncio.ensure_future(budget.acquire(30))  # would fit, but waits its turn behind the second
    gone = asyncio.ensure_future(budget.acquire(10))
    await asyncio.sleep(0)
    assert not (second.done() or third.done() or gone.done())
    gone.cancel()
    budget.release(first)
    assert await second == 60 and await third == 30 and budget.used == 90  # the cancelled waiter holds nothing
    budget.release(60)
    budget.release(30)
    assert budget.used == 0 and await budget.acquire(500) == 100  # larger than the budget: alone
