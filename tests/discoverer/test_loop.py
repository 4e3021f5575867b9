"""The poll loop and the election in one process, against a real redis-server.

These drive ``Election.campaign`` and ``PollLoop.poll_once`` step by step so
each scenario is deterministic; the process-level tests live in
test_processes.py.
"""
from __future__ import annotations

import asyncio
import contextlib

import pytest
from prometheus_client import REGISTRY

from discoverer.config import DiscovererConfig
from discoverer.election import LeaseTimes
from discoverer.loop import Timing
from discoverer.rules import Rules
from discoverer.service import DiscovererService
from discoverer.sources import Answer
from harness.wait import async_wait_until
from shared.config import RedisSettings
from shared.errors import SourceError, StoreUnavailable
from shared.keys import Keys
from shared.model import DEFAULT_ALLOWED_NETWORKS, parse_networks

KEYS = Keys()
RULES = Rules(sni_template="{id}.builders.internal", port=443, allowed=parse_networks(DEFAULT_ALLOWED_NETWORKS),
              grace=0.0, mass_share=1.0, mass_hold=0.0)


def rec(i: int, ip: str | None = None) -> dict:
    return {"id": f"b{i:02d}", "app": "web", "region": "ams", "ip": ip or f"fdaa::{i:x}"}


class FakeSource:
    def __init__(self, records=()):
        self.records = list(records)
        self.error: str | None = None
        self.fetches = 0  # answers and errors alike

    async def fetch(self) -> Answer:
        self.fetches += 1
        if self.error:
            raise SourceError(self.error)
        return Answer(records=[dict(r) for r in self.records])

    async def aclose(self) -> None:
        pass


class Node:
    """One discoverer: a ``DiscovererService`` wired (its clients, election, poll loop and intents reader
    built as ``discoverer`` builds them) and driven step by step, or run whole with ``async with node.service``."""

    def __init__(self, service: DiscovererService):
        self.service = service
        self.store, self.election, self.disc = service.store, service.election, service.poll_loop
        self.reader = service.intents

    async def lead(self) -> None:
        await self.election.campaign()
        assert self.election.lease() is not None

    async def tick(self) -> None:
        """One election step; a dropped connection fails the first command after a restart."""
        try:
            await self.election.campaign()
        except StoreUnavailable:
            await self.election.campaign()


def node_config(url: str, holder: str, *, ttl: float = 1.0, interval: float = 0.02, rules: Rules = RULES):
    return DiscovererConfig(redis=RedisSettings(url=url), source="file", rules=rules, holder=holder,
                            timing=Timing(interval=interval, backoff=0.05), lease=LeaseTimes(ttl=ttl, retry=0.05))


@pytest.fixture
async def nodes(redis_server):
    """``await nodes(holder, source, ttl=..., interval=...)``: a wired Node; each is unwired at the end
    (its lease released, its clients closed)."""
    async with contextlib.AsyncExitStack() as stack:
        async def make(holder: str, source: FakeSource, *, status_every: float = 0.1, **kw) -> Node:
            service = DiscovererService(node_config(redis_server.url, holder, **kw), source=source,
                                        status_every=status_every)
            await stack.enter_async_context(service.wired())
            stack.push_async_callback(service.stop)
            return Node(service)

        yield make


def routes(redis_server) -> dict[str, str]:
    with redis_server.client() as c:
        return {k.decode(): v.decode() for k, v in c.hgetall(KEYS.routes).items()}


def xlen(redis_server) -> int:
    with redis_server.client() as c:
        return c.xlen(KEYS.changes)


async def test_the_leader_writes_the_set_once_and_then_only_changes(nodes, redis_server):
    source = FakeSource([rec(1), rec(2)])
    a = await nodes("a", source)
    await a.lead()
    assert await a.disc.poll_once()
    assert routes(redis_server) == {"b01.builders.internal": "[fdaa::1]:443 b01",
                                    "b02.builders.internal": "[fdaa::2]:443 b02"}
    for _ in range(5):
        assert await a.disc.poll_once()
    assert xlen(redis_server) == 1
    source.records = [rec(2), rec(3, ip="127.0.0.3")]
    assert await a.disc.poll_once()
    assert routes(redis_server) == {"b02.builders.internal": "[fdaa::2]:443 b02",
                                    "b03.builders.internal": "127.0.0.3:443 b03"}
    assert xlen(redis_server) == 2


async def test_a_standby_never_writes(nodes, redis_server):
    a, b = await nodes("a", FakeSource([rec(1)])), await nodes("b", FakeSource([rec(9)]))
    await a.lead()
    await b.election.campaign()
    assert b.election.lease() is None
    assert await b.disc.poll_once()  # polls fine, but writes nothing
    assert routes(redis_server) == {}


async def test_a_new_leader_starts_from_redis_and_writes_only_the_difference(nodes, redis_server):
    source = FakeSource([rec(1), rec(2)])
    a, b = await nodes("a", source), await nodes("b", source)
    await a.lead()
    await a.disc.poll_once()
    await a.election.release()
    await b.lead()
    assert await b.disc.poll_once()
    assert xlen(redis_server) == 1  # same set: nothing written
    source.records.append(rec(3))
    await b.disc.poll_once()
    with redis_server.client() as c:
        last = c.xrevrange(KEYS.changes, count=1)[0][1]
    assert last[b"added"] == b'["b03"]' and last[b"epoch"] == str(b.election.lease().epoch).encode()


async def test_a_source_failure_keeps_the_set(nodes, redis_server):
    source = FakeSource([rec(1), rec(2)])
    a = await nodes("a", source)
    await a.lead()
    await a.disc.poll_once()
    source.error = "SERVFAIL"
    assert not await a.disc.poll_once()
    assert a.disc.last_error and "keeping the last good set" in a.disc.last_error
    assert len(routes(redis_server)) == 2
    source.error = None
    assert await a.disc.poll_once() and a.disc.last_error is None


async def test_a_fenced_write_steps_down_and_changes_nothing(nodes, redis_server):
    source = FakeSource([rec(1)])
    a = await nodes("a", source)
    await a.lead()
    await a.disc.poll_once()
    with redis_server.client() as c:
        c.set(KEYS.leader, "intruder")
    source.records.append(rec(2))
    await a.disc.poll_once()
    assert a.election.lease() is None
    assert list(routes(redis_server)) == ["b01.builders.internal"] and xlen(redis_server) == 1


async def test_a_version_conflict_reloads_and_converges(nodes, redis_server):
    source = FakeSource([rec(1)])
    a = await nodes("a", source)
    await a.lead()
    await a.disc.poll_once()
    with redis_server.client() as c:
        c.incr(KEYS.version)  # someone else moved the version
    source.records.append(rec(2))
    assert not await a.disc.poll_once() or len(routes(redis_server)) == 1
    await a.disc.poll_once()
    assert len(routes(redis_server)) == 2


async def test_redis_restarted_empty_with_the_same_epoch_is_rewritten(nodes, redis_server):
    """Regression: the mirror was keyed on the epoch, which restarts at 1 with an empty Redis."""
    a = await nodes("a", FakeSource([rec(1), rec(2)]))
    await a.lead()
    assert a.election.lease().epoch == 1
    await a.disc.poll_once()
    redis_server.restart()
    await a.tick()  # renew fails: the lease is gone
    assert a.election.lease() is None
    await a.tick()  # won again: Redis' INCR says 1, the epoch floor makes it 2 (never an epoch held before)
    assert a.election.lease().epoch == 2
    assert await a.disc.poll_once()
    assert len(routes(redis_server)) == 2
    with redis_server.client() as c:
        assert int(c.get(KEYS.version)) == 2  # the version never goes back


async def test_writes_lost_in_a_failover_are_written_again_under_a_new_version(nodes, redis_server, caplog):
    """Async replication: the new master lacks an acknowledged write. The leader's version CAS
    sees Redis behind its mirror, reloads, and writes the difference again on its next poll,
    as a version past the lost one (a replica may have served the lost version)."""
    source = FakeSource([rec(1)])
    a = await nodes("a", source)
    await a.lead()
    assert await a.disc.poll_once()
    data = [KEYS.builders, KEYS.routes, KEYS.version, KEYS.changes, KEYS.epoch]
    with redis_server.client() as c:
        replica = {k: c.dump(k) for k in data}  # what the replica had received
    source.records.append(rec(2))
    assert await a.disc.poll_once()
    assert len(routes(redis_server)) == 2 and a.disc.mirror.version == 2  # acknowledged
    with redis_server.client() as c:  # the failover: the replica's data, the lease still ours
        for k, v in replica.items():
            c.restore(k, 0, v, replace=True)
        assert len(c.hgetall(KEYS.routes)) == 1 and int(c.get(KEYS.version)) == 1
    assert await a.disc.poll_once()  # nothing to write, but the version check sees Redis at 1, not 2
    assert "it lost acknowledged writes" in caplog.text
    assert await a.disc.poll_once()  # reloaded: b02 is written again
    assert sorted(routes(redis_server)) == ["b01.builders.internal", "b02.builders.internal"]
    with redis_server.client() as c:
        version = int(c.get(KEYS.version))
        last = c.xrevrange(KEYS.changes, count=1)[0][1]
    assert version == 3 and int(last[b"version"]) == 3 and last[b"added"] == b'["b02"]'


async def test_a_lost_write_found_by_the_version_cas_is_written_again(nodes, redis_server, caplog):
    """The same loss seen by the next write instead: VersionConflict, reload, the union written."""
    source = FakeSource([rec(1)])
    a = await nodes("a", source)
    await a.lead()
    assert await a.disc.poll_once()
    with redis_server.client() as c:
        replica = {k: c.dump(k) for k in (KEYS.builders, KEYS.routes, KEYS.version, KEYS.changes)}
    source.records.append(rec(2))
    assert await a.disc.poll_once()
    with redis_server.client() as c:
        for k, v in replica.items():
            c.restore(k, 0, v, replace=True)
    source.records.append(rec(3))  # a change before any version check: the write's CAS fails
    assert await a.disc.poll_once()
    assert "expected version 2, Redis holds 1" in caplog.text
    assert await a.disc.poll_once()
    assert len(routes(redis_server)) == 3
    with redis_server.client() as c:
        assert int(c.get(KEYS.version)) == 3


async def test_redis_down_is_reported_and_survived(nodes, redis_server):
    source = FakeSource([rec(1)])
    a = await nodes("a", source)
    await a.lead()
    await a.disc.poll_once()
    redis_server.stop()
    source.records.append(rec(2))
    assert not await a.disc.poll_once()
    assert "Redis unavailable" in a.disc.last_error
    redis_server.start()
    await a.tick()
    await a.tick()
    assert await a.disc.poll_once()
    assert len(routes(redis_server)) == 2


async def test_a_paused_redis_makes_the_leader_step_down_in_bounded_time(nodes, redis_server, caplog):
    a = await nodes("a", FakeSource([rec(1)]), ttl=1.0)
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        task = tg.create_task(a.election.run())
        await async_wait_until(lambda: asyncio.sleep(0, a.election.lease()), 2, what="leadership")
        redis_server.pause()
        try:
            await async_wait_until(lambda: asyncio.sleep(0, a.election._lease is None), 3, what="step down")
        finally:
            redis_server.resume()
        assert "leadership lost" in caplog.text
        await async_wait_until(lambda: asyncio.sleep(0, a.election.lease()), 3, what="leadership again")
        task.cancel()


async def test_two_elections_never_lead_at_once(nodes, redis_server):
    """Sampled all along: never two leaders, while the lease is handed over twice (each handover waited on)."""
    a, b = await nodes("a", FakeSource(), ttl=0.5), await nodes("b", FakeSource(), ttl=0.5)
    samples = [0]

    def leading() -> list:
        return [n for n in (a, b) if n.election.lease() is not None]

    async def sample():
        while True:
            assert len(leading()) <= 1, "two leaders at once"
            samples[0] += 1
            await asyncio.sleep(0.005)

    async def hand_over(holder) -> object:
        """Release until the other one takes the lease (the releaser may win it back first)."""
        while True:
            await holder.election.release()
            await async_wait_until(leading, 10, what="a leader after the release")
            if leading()[0] is not holder:
                return leading()[0]

    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(a.election.run()), tg.create_task(b.election.run()), tg.create_task(sample())]
        await async_wait_until(leading, 10, what="a first leader")
        first = leading()[0]
        second = await hand_over(first)
        assert await hand_over(second) is first
        for t in tasks:
            t.cancel()
    assert {first.election.holder, second.election.holder} == {"a", "b"} and samples[0] > 10


async def test_unreadable_records_in_redis_are_replaced_or_removed(nodes, redis_server, caplog):
    a = await nodes("a", FakeSource([rec(1), rec(2)]))
    with redis_server.client() as c:
        c.hset(KEYS.builders, mapping={"b01": b"{garbage", "b09": b"{garbage"})
    await a.lead()
    assert await a.disc.poll_once()
    assert "unreadable builder records" in caplog.text
    with redis_server.client() as c:
        assert sorted(c.hkeys(KEYS.builders)) == [b"b01", b"b02"]
    assert routes(redis_server) == {"b01.builders.internal": "[fdaa::1]:443 b01",
                                    "b02.builders.internal": "[fdaa::2]:443 b02"}
    assert await a.disc.poll_once() and xlen(redis_server) == 1


async def test_a_redis_that_refuses_writes_is_an_outage_not_a_crash(nodes, redis_server):
    source = FakeSource([rec(1)])
    a = await nodes("a", source, ttl=1.0)
    await a.lead()
    await a.disc.poll_once()
    with redis_server.client() as c:
        c.replicaof("127.0.0.1", 1)  # a replica of nothing: READONLY for every write
    try:
        with pytest.raises(StoreUnavailable, match="READONLY"):
            await a.election.campaign()
        source.records.append(rec(2))
        assert not await a.disc.poll_once()
        assert "READONLY" in a.disc.last_error
    finally:
        with redis_server.client() as c:
            c.replicaof("NO", "ONE")
    await async_wait_until(lambda: asyncio.sleep(0, a.election.lease() is None), 2, what="local lease expiry")
    await a.tick()  # steps down
    await a.tick()  # wins again
    assert a.election.lease() is not None
    assert await a.disc.poll_once()
    assert len(routes(redis_server)) == 2


def last_change(redis_server) -> dict[str, str]:
    with redis_server.client() as c:
        return {k.decode(): v.decode() for k, v in c.xrevrange(KEYS.changes, count=1)[0][1].items()}


async def test_a_set_edited_by_hand_is_rewritten_and_logged(nodes, redis_server, caplog):
    """HDEL/HSET by hand leave the version as it was: the leader's check counts the records,
    logs an error and writes its set back, so the replicas (which never saw the edit) and Redis agree."""
    a = await nodes("a", FakeSource([rec(1), rec(2), rec(3)]))
    a.disc.timing = Timing(interval=0.02, backoff=0.05, verify_every=0.0)
    await a.lead()
    assert await a.disc.poll_once()
    with redis_server.client() as c:
        c.hdel(KEYS.builders, "b02")
    before = REGISTRY.get_sample_value("discoverer_set_repairs_total") or 0
    assert await a.disc.poll_once()
    assert "changed by hand: 2 records at version 1, where the leader wrote 3 (missing or altered: b02" in caplog.text
    assert [r.levelname for r in caplog.records if "changed by hand" in r.getMessage()] == ["ERROR"]
    assert "xdsctl deregister --id ID" in caplog.text
    assert REGISTRY.get_sample_value("discoverer_set_repairs_total") == before + 1
    with redis_server.client() as c:
        assert sorted(c.hkeys(KEYS.builders)) == [b"b01", b"b02", b"b03"] and int(c.get(KEYS.version)) == 2
        c.hset(KEYS.builders, "zz", '{"not": "ours"}')  # an extra record: removed again
    assert last_change(redis_server)["added"] == '["b02"]'
    assert await a.disc.poll_once()
    assert "not ours: zz" in caplog.text
    assert last_change(redis_server)["version"] == "3" and len(routes(redis_server)) == 3
    with redis_server.client() as c:
        assert sorted(c.hkeys(KEYS.builders)) == [b"b01", b"b02", b"b03"]


async def test_removing_a_record_deleted_by_hand_still_reaches_the_replicas(nodes, redis_server, caplog):
    """The edit and the leader's own removal of that builder in one step: the script would remove
    nothing and no replica would hear of it. The leader notices the no-op, restores, removes for real."""
    source = FakeSource([rec(1), rec(2)])
    a = await nodes("a", source)
    await a.lead()
    assert await a.disc.poll_once()
    with redis_server.client() as c:
        c.hdel(KEYS.builders, "b02")
    source.records = [rec(1)]
    assert await a.disc.poll_once()
    assert "a write of +0/-1 records changed nothing at version 1" in caplog.text
    assert last_change(redis_server)["added"] == '["b02"]'
    assert await a.disc.poll_once()
    change = last_change(redis_server)
    assert (change["version"], change["removed"]) == ("3", '["b02"]'), "the replicas are told b02 is gone"
    assert list(routes(redis_server)) == ["b01.builders.internal"]
