"""The intents part of the fenced write (shared/scripts.py APPLY) against a real redis-server.

The diff, the version, the change entry, the cursor, the deregistered ids and
the outcomes go in one script call, or none of them do.
"""
from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from shared.errors import Fenced
from shared.keys import Keys
from shared.model import SOURCE_DNS, SOURCE_INTENT, Builder
from shared.store import IntentWrite, Lease

KEYS = Keys()


def b(i: int, **over) -> Builder:
    bid = f"b{i:02d}"
    return replace(Builder(bid, "web", "ams", f"fdaa::{i:x}", 443, f"{bid}.builders.internal", seen_at=1.5), **over)


def outcome(request: str, status: str = "applied", **more) -> tuple[str, dict]:
    return request, {"request": request, "status": status, **more}


async def test_one_call_writes_the_diff_cursor_outcomes_and_deregistrations(store, redis_server):
    lease = (await store.try_acquire("a", 5000))[0]
    write = IntentWrite(cursor="1000-3", outcomes=[outcome("r1"), outcome("r2", "rejected", reason="bad_id")],
                        deregistered={"b09": 1234.5}, ttl=60)
    version = await store.apply(lease, 0, [b(1, source=SOURCE_INTENT, registered_at=99.0)], [], intents=write)
    c = redis_server.client()
    assert version == 1 and c.get(KEYS.intents_cursor) == b"1000-3"
    applied, rejected = (orjson.loads(c.get(KEYS.outcome(r))) for r in ("r1", "r2"))
    assert applied["version"] == 1 and "version" not in rejected and rejected["reason"] == "bad_id"
    assert 0 < c.ttl(KEYS.outcome("r1")) <= 60
    assert c.hgetall(KEYS.deregistered) == {b"b09": b"1234.5"}
    stored = Builder.from_json(c.hget(KEYS.builders, "b01"))
    assert (stored.source, stored.registered_at) == (SOURCE_INTENT, 99.0)
    snap = await store.load(intents=True)
    assert snap.intents_cursor == "1000-3" and snap.deregistered == {"b09": 1234.5}
    assert snap.builders["b01"].unconfirmed


async def test_rejected_intents_alone_move_the_cursor_without_a_version(store, redis_server):
    lease = (await store.try_acquire("a", 5000))[0]
    await store.apply(lease, 0, [b(1)], [])
    write = IntentWrite(cursor="2000-0", outcomes=[outcome("bad", "rejected", reason="unknown_op")])
    assert await store.apply(lease, 1, [], [], intents=write) == 1
    c = redis_server.client()
    assert c.get(KEYS.version) == b"1" and c.xlen(KEYS.changes) == 1
    assert c.get(KEYS.intents_cursor) == b"2000-0" and orjson.loads(c.get(KEYS.outcome("bad")))["status"] == "rejected"


async def test_a_fenced_write_applies_no_intent(store, redis_server):
    lease = (await store.try_acquire("a", 5000))[0]
    await store.apply(lease, 0, [b(1)], [])
    stale = Lease("a", lease.epoch + 7, 1)
    with pytest.raises(Fenced):
        await store.apply(stale, 1, [b(2)], [], intents=IntentWrite(cursor="3000-0", outcomes=[outcome("r")]))
    c = redis_server.client()
    assert c.get(KEYS.intents_cursor) is None and c.get(KEYS.outcome("r")) is None
    assert c.hkeys(KEYS.builders) == [b"b01"] and c.get(KEYS.version) == b"1"


async def test_touch_rewrites_bookkeeping_without_a_version_or_a_change(store, redis_server):
    lease = (await store.try_acquire("a", 5000))[0]
    await store.apply(lease, 0, [b(1, source=SOURCE_INTENT, registered_at=5.0)], [])
    confirmed = b(1, source=SOURCE_DNS, registered_at=5.0)
    assert await store.apply(lease, 1, [], [], touch=[confirmed, b(7)]) == 1  # b07 is not there: not created
    c = redis_server.client()
    assert c.xlen(KEYS.changes) == 1 and c.hkeys(KEYS.builders) == [b"b01"]
    assert Builder.from_json(c.hget(KEYS.builders, "b01")).source == SOURCE_DNS


async def test_applied_intents_are_trimmed_from_the_stream_only_before_the_given_id(store, redis_server):
    c = redis_server.client()
    ids = [c.xadd(KEYS.intents, {"op": "deregister", "id": f"b{i}"}, id=f"{1000 * (i + 1)}-0") for i in range(300)]
    lease = (await store.try_acquire("a", 5000))[0]
    await store.apply(lease, 0, [], [], intents=IntentWrite(cursor=ids[-1].decode(), trim_before="200000-0"))
    left = c.xrange(KEYS.intents, count=1)[0][0]
    assert 101 <= c.xlen(KEYS.intents) < 300 and int(left.split(b"-")[0]) <= 200000  # "~": whole nodes only
    assert c.xrevrange(KEYS.intents, count=1)[0][0] == ids[-1]


async def test_an_ended_deregistration_is_forgotten_a_deregistration(store, redis_server):
    lease = (await store.try_acquire("a", 5000))[0]
    await store.apply(lease, 0, [], [], intents=IntentWrite(cursor="1-0", deregistered={"b01": 10.0, "b02": 20.0}))
    await store.apply(lease, 0, [], [], intents=IntentWrite(cursor="1-0", deregistration_ended=["b01"]))
    assert (await store.load(intents=True)).deregistered == {"b02": 20.0}


@pytest.mark.parametrize("key", [KEYS.deregistered, KEYS.intents])
async def test_a_wrong_type_intents_key_refuses_the_whole_step(store, redis_server, key):
    """Redis does not roll a script back: the intents keys are checked before the first write, so a
    hand-made string there refuses the diff, the version and the cursor alike (nothing half-written)."""
    from shared.errors import StoreMisuse

    lease = (await store.try_acquire("a", 5000))[0]
    c = redis_server.client()
    c.set(key, "by hand")
    write = IntentWrite(cursor="3000-0", outcomes=[outcome("r1")], deregistered={"b09": 1.0}, ttl=60,
                        trim_before="1-0")
    with pytest.raises(StoreMisuse, match="WRONGTYPE"):
        await store.apply(lease, 0, [b(1)], [], intents=write)
    assert c.get(KEYS.version) is None and c.hlen(KEYS.builders) == 0 and c.get(KEYS.intents_cursor) is None
    assert c.get(KEYS.outcome("r1")) is None
