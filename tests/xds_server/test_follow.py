"""Redis -> replica: gaps resync from a full load; a Redis that restarts never empties the Envoys."""
from __future__ import annotations

import asyncio

import pytest

from shared.keys import Keys

from .harness import builder, eventually, sni
from .test_delta import dsync, updated
from .test_sotw import sync
from .xds_client import CDS, LDS

KEYS = Keys()


def write_behind_the_stream(redis_server, version: int, *builders) -> None:
    """Change the set and the version with no stream entry, as if the entries were lost."""
    with redis_server.client() as c:
        pipe = c.pipeline(transaction=True)
        for b in builders:
            pipe.hset(KEYS.builders, b.id, b.to_json())
            pipe.hset(KEYS.routes, b.sni, b.route)
        pipe.set(KEYS.version, version)
        pipe.execute()


def follower_is_reading_the_stream(redis_server, name: str = "xds:r1") -> bool:
    with redis_server.client() as c:
        return any(client.get("name") == name and client.get("cmd") == "xread" for client in c.client_list())


async def test_a_quiet_version_jump_resyncs(writer, replicas, clients, redis_server):
    start = await writer.put(builder("a"))
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica).sotw()
    await sync(ads, CDS)
    write_behind_the_stream(redis_server, start + 3, builder("x"))
    resp = await ads.recv(CDS)
    assert resp.version_info == str(start + 3)
    assert sorted(ads.names(resp)) == [sni("a"), sni("x")]


async def test_a_trimmed_stream_and_an_entry_after_a_jump_resync(writer, replicas, clients, redis_server):
    start = await writer.put(builder("a"), builder("b"))
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica).delta()
    await dsync(ads, CDS)
    with redis_server.client() as c:
        c.xtrim(KEYS.changes, maxlen=0, approximate=False)
        c.hdel(KEYS.builders, "b")  # lost with the trimmed entries
    write_behind_the_stream(redis_server, start + 5, builder("x"))
    version = await writer.put(builder("c"))  # the next entry says start+6
    assert version == start + 6
    await replica.wait_version(version)
    assert set(replica.cache.builders) == {"a", "c", "x"}
    seen_removed, seen_updated = set(), set()
    while True:  # one or two responses, depending on which gap the follower saw first
        resp = await ads.recv(CDS)
        seen_removed |= set(resp.removed_resources)
        seen_updated |= set(updated(resp))
        await ads.ack(resp)
        if resp.system_version_info == str(version):
            break
    assert seen_removed == {sni("b")} and seen_updated == {sni("c"), sni("x")}


@pytest.mark.parametrize("routing", ["sni_cluster", "filter_chains"])
async def test_redis_restarting_empty_keeps_the_last_set_until_it_is_rewritten(
        writer, replicas, clients, redis_server, routing):
    await writer.put(builder("a"), builder("b"))
    served = await writer.put(builder("c"))
    replica = await replicas(routing=routing)
    ads = await clients(replica, node_id="old").sotw()
    await sync(ads, CDS, LDS)

    redis_server.stop()
    late = await clients(replica, node_id="late").sotw()
    got = await sync(late, CDS, LDS)  # served while Redis is down: the last snapshot, whole
    assert got[CDS].version_info == str(served)
    assert sorted(late.names(got[CDS])) == [sni("a"), sni("b"), sni("c")]

    redis_server.start()  # empty: version 0, no builders
    await eventually(lambda: replica.follower.behind, 5, "the replica read the empty Redis")
    await ads.expect_silence(0.6, caught_up=False)  # it serves its own version, not Redis' 0
    assert replica.cache.version == served and len(replica.cache.builders) == 3

    # the discoverer comes back: a new lease raises the version to what it knew (no entry),
    # then it rewrites the set it sees now, which lost b meanwhile
    writer.floor = served
    await writer.acquire()
    await eventually(lambda: follower_is_reading_the_stream(redis_server), 5, "the follower back on the stream")
    version = await writer.put(builder("a"), builder("c"), builder("d"))
    assert version == served + 1
    await replica.wait_version(version)
    assert set(replica.cache.builders) == {"a", "c", "d"}
    for _ in range(3):  # in filter_chains the listener goes first, then the clusters
        resp = await ads.recv()
        await ads.ack(resp)
        if resp.type_url == CDS and resp.version_info == str(version):
            break
    assert sorted(ads.names(resp)) == [sni("a"), sni("c"), sni("d")], "b must not linger after the rewrite"


async def test_redis_restarting_with_its_data_is_followed_on(writer, replicas, clients, redis_server):
    await writer.put(builder("a"))
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica).sotw()
    await sync(ads, CDS)
    redis_server.restart(keep_data=True)
    await ads.expect_silence(0.3)
    version = await writer.put(builder("b"))
    resp = await ads.recv(CDS)
    assert resp.version_info == str(version) and sorted(ads.names(resp)) == [sni("a"), sni("b")]


async def test_a_corrupt_entry_changes_nothing_and_the_resync_is_exact(writer, replicas, clients, redis_server):
    """An entry that removes a and names x without its record: refused whole, then a full load."""
    start = await writer.put(builder("a"), builder("b"))
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica).sotw()
    await sync(ads, CDS)
    x = builder("x")
    with redis_server.client() as c:
        pipe = c.pipeline(transaction=True)
        pipe.hdel(KEYS.builders, "a")
        pipe.hset(KEYS.builders, "x", x.to_json())
        pipe.set(KEYS.version, start + 1)
        pipe.xadd(KEYS.changes, {"version": start + 1, "epoch": 1, "added": '["x"]', "removed": '["a"]',
                                 "updated": "[]", "records": "[]"})
        pipe.execute()
    resp = await ads.recv(CDS)
    assert resp.version_info == str(start + 1)
    assert sorted(ads.names(resp)) == [sni("b"), sni("x")], "a's cluster must go with the resync"


@pytest.mark.parametrize("kind", ["sotw", "delta"])
async def test_streams_follow_a_reset_that_restarts_the_versions(writer, replicas, clients, redis_server, kind):
    """Redis and every discoverer lost their state: versions start again at 1 and, once the replica
    accepts that, each stream is brought to the new set (a delta by content, not by version numbers)."""
    for name in "abc":
        old = await writer.put(builder(name))
    replica = await replicas(routing="sni_cluster", accept_reset_after=0.5)
    client = clients(replica)
    ads = await (client.sotw() if kind == "sotw" else client.delta())
    await (sync(ads, CDS) if kind == "sotw" else dsync(ads, CDS))
    with redis_server.client() as c:
        c.flushall()
    writer.lease = None
    assert await writer.put(builder("z")) == 1 < old
    resp = await ads.recv(CDS, timeout=5)
    if kind == "sotw":
        assert ads.names(resp) == [sni("z")]
    else:
        assert updated(resp) == [sni("z")] and sorted(resp.removed_resources) == [sni(n) for n in "abc"]
    await ads.ack(resp)
    version = await writer.put(builder("y"))  # and the new versions are followed on
    resp = await ads.recv(CDS)
    assert (resp.version_info if kind == "sotw" else resp.system_version_info) == str(version)


async def test_a_reset_accepted_at_our_own_version_number_is_served(writer, replicas, clients, redis_server):
    for name in "abc":
        served = await writer.put(builder(name))
    replica = await replicas(routing="sni_cluster", accept_reset_after=0.4)
    ads = await clients(replica).delta()
    await dsync(ads, CDS)
    await asyncio.to_thread(redis_server.restart)  # empty
    write_behind_the_stream(redis_server, served, builder("z"))  # our number, another set
    resp = await ads.recv(CDS, timeout=5)
    assert updated(resp) == [sni("z")] and sorted(resp.removed_resources) == [sni(n) for n in "abc"]
    await ads.ack(resp)
    writer.lease = None
    await writer.put(builder("y"))
    resp = await ads.recv(CDS)
    assert updated(resp) == [sni("y")] and not resp.removed_resources
    assert set(replica.cache.snapshot(replica.registry.peers.copy().pop().view, CDS).resources) == \
        {sni("y"), sni("z")}
