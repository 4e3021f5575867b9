"""Intents through the poll loop and the election, in one process, against a real redis-server.

Each node is a ``DiscovererService`` with its own clients (one for the election
and the writes, one for the blocking intent reads), wired as ``discoverer`` wires them. The failover
scenarios drive the steps by hand so each interleaving is deterministic; the
process-level ones (freeze, kill) are in test_intent_processes.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import time

import orjson
import pytest

from discoverer import status
from discoverer.intents import IntentReader
from discoverer.rules import Rules
from harness.wait import async_wait_until
from shared.connect import aclose, connect
from shared.keys import Keys
from shared.model import DEFAULT_ALLOWED_NETWORKS, parse_networks
from shared.store import Store

from .test_loop import FakeSource, nodes, rec  # noqa: F401 - nodes is a fixture

KEYS = Keys()
RULES = Rules(sni_template="{id}.builders.internal", port=443, allowed=parse_networks(DEFAULT_ALLOWED_NETWORKS),
              grace=0.0, mass_share=1.0, mass_hold=0.0, confirm_grace=30.0)


def register(bid: str, ip: str) -> dict:
    return {"op": "register", "id": bid, "address": ip, "app": "web", "region": "ams"}


@pytest.fixture
def intent_nodes(nodes):
    """test_loop's ``nodes`` with this module's rules (a confirm grace for deregistered ids)."""
    return functools.partial(nodes, rules=RULES, status_every=status.EVERY)


async def outcome_of(store: Store, request: str, timeout: float = 3.0) -> dict:
    return await async_wait_until(lambda: store.outcome(request), timeout, interval=0.002,
                                  what=f"outcome of {request}")


async def test_an_intent_is_applied_at_once_not_at_the_next_poll(intent_nodes, redis_server):
    source = FakeSource([rec(1)])
    a = await intent_nodes("a", source, interval=60.0)  # one poll at start, the next long after outcome_of gives up
    await a.service.start()
    await async_wait_until(lambda: a.store.version(), 5, what="the first poll written")
    polls = source.fetches
    entry = await a.store.append_intent(register("x1", "fdaa::99"))
    out = await outcome_of(a.store, entry)
    assert out["status"] == "applied" and out["version"] == 2, out
    assert source.fetches == polls, "applied by a poll, not by the intent read"
    with redis_server.client() as c:
        assert c.hget(KEYS.routes, "x1.builders.internal") == b"[fdaa::99]:443 x1"
        assert c.get(KEYS.intents_cursor).decode() == entry
        change = c.xrevrange(KEYS.changes, count=1)[0][1]
        assert orjson.loads(change[b"added"]) == ["x1"]


async def test_intents_still_apply_while_dns_fails(intent_nodes):
    source = FakeSource([rec(1)])
    a = await intent_nodes("a", source, interval=0.05)
    await a.service.start()
    await async_wait_until(lambda: a.store.version(), 5, what="the first poll written")
    source.error = "SERVFAIL"
    failed = source.fetches
    await async_wait_until(lambda: asyncio.sleep(0, source.fetches > failed + 1 and a.disc.last_error), 5,
                           what="polls failing")
    out = await outcome_of(a.store, await a.store.append_intent(register("x1", "fdaa::99")))
    assert out["status"] == "applied"
    assert "x1" in (await a.store.load()).builders and "b01" in (await a.store.load()).builders


async def test_a_leader_fenced_between_read_and_write_applies_nothing_and_the_next_applies_it(
        intent_nodes, redis_server):
    a, b = [await intent_nodes(n, FakeSource([rec(1)]), ttl=0.6) for n in "ab"]
    await a.election.campaign()
    assert await a.disc.poll_once()
    entry = await a.store.append_intent(register("x1", "fdaa::99"))
    await a.reader._read_once()
    assert [e.entry_id for e in a.reader.pending] == [entry]  # read, not yet applied: now a freezes
    with redis_server.client() as c:  # its lease runs out in Redis
        await async_wait_until(lambda: asyncio.sleep(0, c.get(KEYS.leader) is None), 5, what="a's lease expired")
    await b.election.campaign()
    assert b.election.lease() is not None
    a.election._valid_until = time.monotonic() + 10  # a paused leader that still believes it leads
    assert await a.disc.poll_once()  # its write is refused by the epoch check ...
    assert a.election.lease() is None
    with redis_server.client() as c:
        assert c.get(KEYS.intents_cursor) is None and c.get(KEYS.outcome(entry)) is None  # ... and wrote nothing
    assert await b.disc.poll_once()  # b loads the cursor from Redis and starts reading after it
    await b.reader._read_once()
    assert await b.disc.poll_once()
    out = await b.store.outcome(entry)
    assert out["status"] == "applied" and out["version"] == 2
    assert await b.store.version() == 2


async def test_a_new_leader_resumes_after_the_cursor_and_applies_nothing_twice(intent_nodes, redis_server):
    a, b = await intent_nodes("a", FakeSource([rec(1)])), await intent_nodes("b", FakeSource([rec(1)]))
    await a.election.campaign()
    assert await a.disc.poll_once()
    first = await a.store.append_intent(register("x1", "fdaa::99"))
    await a.reader._read_once()
    assert await a.disc.poll_once()
    before = await a.store.outcome(first)
    await a.election.release()
    await b.election.campaign()
    assert await b.disc.poll_once()
    second = await b.store.append_intent({"op": "deregister", "id": "x1"})
    await b.reader._read_once()
    assert [e.entry_id for e in b.reader.pending] == [second]  # the first is behind the cursor
    assert await b.disc.poll_once()
    assert await b.store.outcome(first) == before  # same outcome, same version: applied once
    assert (await b.store.outcome(second))["version"] == 3
    with redis_server.client() as c:
        adds = [orjson.loads(f[b"added"]) for _, f in c.xrange(KEYS.changes)]
        assert adds.count(["x1"]) == 1
        assert c.hexists(KEYS.deregistered, "x1")


async def test_an_unreadable_cursor_resumes_with_new_intents(intent_nodes, redis_server):
    with redis_server.client() as c:
        c.xadd(KEYS.intents, register("old", "fdaa::1"), id="1-0")  # before the cursor went bad: left to DNS
        c.set(KEYS.intents_cursor, "garbage")
    a = await intent_nodes("a", FakeSource([rec(1)]))
    await a.service.start()
    await async_wait_until(lambda: a.store.version(), 5, what="the first poll written")
    out = await outcome_of(a.store, await a.store.append_intent(register("x1", "fdaa::99")))
    assert out["status"] == "applied" and await a.store.outcome("1-0") is None


async def test_a_wrong_type_intents_stream_never_ends_the_reader(redis_server):
    """WRONGTYPE on {xds}:intents (a string written by hand) is the operator's to fix: the reader logs and
    counts it, keeps its task alive, and reads the intents once the key is a stream again."""
    from discoverer import metrics

    c = redis_server.client()
    c.set(KEYS.intents, "by hand")
    client = connect(redis_server.url)
    reader = IntentReader(Store(client, KEYS), block_ms=100, backoff=0.05)
    before = metrics.OPERATOR_ERRORS.labels("WRONGTYPE")._value.get()
    task = asyncio.create_task(reader.run())
    try:
        reader.start_at("0-0")
        await async_wait_until(lambda: asyncio.sleep(0, metrics.OPERATOR_ERRORS.labels("WRONGTYPE")._value.get()
                                                      > before), 5, what="the refusal counted")
        assert not task.done(), "the reader is still running"
        c.delete(KEYS.intents)
        c.xadd(KEYS.intents, register("b01", "fdaa::1"))
        await async_wait_until(lambda: asyncio.sleep(0, bool(reader.pending)), 5, what="the intent read")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await aclose(client)
