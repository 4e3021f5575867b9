"""shared.store against a real redis-server: leases, fenced writes, the change stream."""
from __future__ import annotations

import orjson
import pytest

from harness.writer import acquire
from shared.errors import CorruptState, Fenced, VersionConflict
from shared.errors import CorruptState, Fenced, StoreMisuse, VersionConflict
from shared.keys import Keys
from shared.model import Builder
from shared.store import Change, Lease, Store

KEYS = Keys()


def b(i: int, ip: str | None = None, sni: str | None = None) -> Builder:
    bid = f"b{i:02d}"
    return Builder(bid, "web", "ams", ip or f"fdaa::{i:x}", 443, sni or f"{bid}.builders.internal", seen_at=1.5)


def dump_all(redis_server) -> dict:
    """Every key of the prefix, with its TTL stripped, for 'nothing changed' checks."""
    with redis_server.client() as c:
        return {k: c.dump(k) for k in sorted(c.keys("*"))}


async def test_acquire_is_exclusive_and_bumps_the_epoch(store):
    a = await acquire(store, "a", 2000)
    assert a == Lease("a", 1, 0)
    assert await acquire(store, "b", 2000) is None
    holder, epoch, ttl = await store.leader()
    assert (holder, epoch) == ("a", 1) and 0 < ttl <= 2000
    assert await store.renew(a, 2000)
    assert await store.release(a)
    b_lease = await acquire(store, "b", 2000)
    assert b_lease.epoch == 2
    assert not await store.renew(a, 2000)
    assert not await store.release(a)
    assert (await store.leader())[0] == "b"


async def test_acquire_raises_the_version_to_the_floor(store):
    lease = await acquire(store, "a", 2000, version_floor=41)
    assert lease.version == 41 and await store.version() == 41
    await store.release(lease)
    assert (await acquire(store, "a", 2000, version_floor=7)).version == 41


async def test_apply_writes_builders_routes_version_and_one_change(store, redis_server):
    lease = await acquire(store, "a", 5000)
    version = await store.apply(lease, 0, [b(1), b(2, ip="127.0.0.2")], [])
    assert version == 1
    c = redis_server.client()
    assert c.hgetall(KEYS.routes) == {
        b"b01.builders.internal": b"[fdaa::1]:443 b01",
        b"b02.builders.internal": b"127.0.0.2:443 b02",
    }
    assert Builder.from_json(c.hget(KEYS.builders, "b01")) == b(1)
    assert c.get(KEYS.version) == b"1"
    entries = c.xrange(KEYS.changes)
    assert len(entries) == 1
    change = Change.from_entry(*entries[0])
    assert (change.version, change.epoch, change.added, change.removed, change.updated) == (1, 1, ("b01", "b02"), (), ())
    assert change.records == (b(1), b(2, ip="127.0.0.2"))


async def test_update_and_remove_are_recorded_and_routes_follow(store, redis_server):
    lease = await acquire(store, "a", 5000)
    await store.apply(lease, 0, [b(1), b(2), b(3)], [])
    v = await store.apply(lease, 1, [b(1, ip="fdaa::99"), b(2, sni="other.builders.internal"), b(3)], ["b04"])
    assert v == 2
    v = await store.apply(lease, 2, [], ["b03"])
    assert v == 3
    c = redis_server.client()
    assert c.hgetall(KEYS.routes) == {
        b"b01.builders.internal": b"[fdaa::99]:443 b01",
        b"other.builders.internal": b"[fdaa::2]:443 b02",
    }
    changes = await store.read_changes("0-0", block_ms=100)
    assert [(ch.version, ch.added, ch.updated, ch.removed) for ch in changes] == [
        (1, ("b01", "b02", "b03"), (), ()),
        (2, (), ("b01", "b02"), ()),
        (3, (), (), ("b03",)),
    ]
    assert [r.id for r in changes[1].records] == ["b01", "b02"]
    snap = await store.load()
    assert snap.version == 3 and set(snap.builders) == {"b01", "b02"} and snap.last_change_id == changes[-1].stream_id


async def test_a_route_taken_over_by_another_builder_is_not_dropped(store, redis_server):
    lease = await acquire(store, "a", 5000)
    await store.apply(lease, 0, [b(1, sni="x.builders.internal")], [])
    await store.apply(lease, 1, [b(2, sni="x.builders.internal")], ["b01"])
    assert redis_server.client().hgetall(KEYS.routes) == {b"x.builders.internal": b"[fdaa::2]:443 b02"}


async def test_a_noop_keeps_the_version_and_the_stream(store, redis_server):
    lease = await acquire(store, "a", 5000)
    await store.apply(lease, 0, [b(1)], [])
    assert await store.apply(lease, 1, [b(1)], ["missing"]) == 1
    assert redis_server.client().xlen(KEYS.changes) == 1


async def test_a_stale_epoch_is_fenced_and_changes_nothing(store, redis_server):
    old = await acquire(store, "a", 5000)
    await store.apply(old, 0, [b(1)], [])
    await store.release(old)
    new = await acquire(store, "a", 5000)  # same holder, new epoch
    assert new.epoch == old.epoch + 1
    before = dump_all(redis_server)
    with pytest.raises(Fenced, match="epoch"):
        await store.apply(old, 1, [b(2)], ["b01"])
    assert dump_all(redis_server) == before


async def test_a_writer_that_does_not_hold_the_lease_is_fenced(store, redis_server):
    lease = await acquire(store, "a", 5000)
    await store.apply(lease, 0, [b(1)], [])
    before = dump_all(redis_server)
    with pytest.raises(Fenced, match="lease"):
        await store.apply(Lease("b", lease.epoch, 1), 1, [b(2)], [])
    redis_server.client().delete(KEYS.leader)  # the lease ran out
    before = dump_all(redis_server)
    with pytest.raises(Fenced, match="lease"):
        await store.apply(lease, 1, [b(2)], [])
    assert dump_all(redis_server) == before


async def test_a_version_conflict_changes_nothing(store, redis_server):
    lease = await acquire(store, "a", 5000)
    await store.apply(lease, 0, [b(1)], [])
    before = dump_all(redis_server)
    with pytest.raises(VersionConflict) as info:
        await store.apply(lease, 0, [b(2)], [])
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert dump_all(redis_server) == before


async def test_the_stream_is_trimmed(redis_server):
    from shared.connect import aclose, connect
    client = connect(redis_server.url)
    try:
        store = Store(client, KEYS, stream_maxlen=10)
        lease = await acquire(store, "a", 5000)
        for v in range(300):
            await store.apply(lease, v, [b(1, ip=f"fdaa::{v + 1:x}")], [])
        assert 10 <= redis_server.client().xlen(KEYS.changes) < 300
    finally:
        await aclose(client)


async def test_load_reports_corrupt_records_instead_of_failing(store, redis_server):
    lease = await acquire(store, "a", 5000)
    await store.apply(lease, 0, [b(1)], [])
    redis_server.client().hset(KEYS.builders, "bad", b"{not json")
    snap = await store.load()
    assert set(snap.builders) == {"b01"} and snap.corrupt == ("bad",)


def test_an_unreadable_change_entry_is_corrupt_state():
    with pytest.raises(CorruptState):
        Change.from_entry(b"1-0", {b"version": b"x", b"epoch": b"1"})
    with pytest.raises(CorruptState):
        Change.from_entry(b"1-0", {b"version": b"1", b"epoch": b"1", b"records": b"[{}]"})


async def test_status_hashes_round_trip(store):
    await store.put_status(KEYS.replicas, {"r1": {"ok": True}, "r2": {"n": 2}})
    await store.put_status(KEYS.replicas, {}, stale=["r2"])
    assert await store.get_status(KEYS.replicas) == {"r1": {"ok": True}}


async def test_a_prefix_keeps_its_keys_apart(redis_server):
    from shared.connect import aclose, connect
    client = connect(redis_server.url)
    try:
        other = Store(client, Keys("{other}"))
        lease = await acquire(other, "a", 5000)
        await other.apply(lease, 0, [b(1)], [])
        keys = {k.decode() for k in redis_server.client().keys("*")}
        assert keys and all(k.startswith("{other}:") for k in keys)
    finally:
        await aclose(client)


async def test_an_unreachable_redis_is_store_unavailable(redis_server):
    from shared.connect import aclose, connect
    from shared.errors import StoreUnavailable
    redis_server.stop()
    client = connect(redis_server.url, timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable):
            await Store(client, KEYS).load()
    finally:
        await aclose(client)


def test_records_are_json_that_lua_compares_byte_for_byte():
    raw = b(1).to_json()
    assert orjson.loads(raw)["sni"] == "b01.builders.internal"
    assert Builder.from_json(raw).to_json() == raw


async def test_a_standby_learns_the_version_from_a_failed_acquire(store):
    lease = await acquire(store, "a", 5000)
    await store.apply(lease, lease.version, [b(1)], [])
    got, version = await store.try_acquire("standby", 5000)
    assert got is None and version == lease.version + 1


@pytest.mark.parametrize("garbage", [b"{not json", b"5", b'{"sni": 7}'])
async def test_an_unreadable_stored_record_is_replaced_or_removed_without_a_script_error(store, redis_server, garbage):
    lease = await acquire(store, "a", 5000)
    await store.apply(lease, 0, [b(1)], [])
    c = redis_server.client()
    c.hset(KEYS.builders, "b01", garbage)
    c.hset(KEYS.builders, "b02", garbage)
    assert await store.apply(lease, 1, [b(1, ip="fdaa::77")], ["b02"]) == 2
    assert c.hkeys(KEYS.builders) == [b"b01"]
    assert c.hget(KEYS.routes, "b01.builders.internal") == b"[fdaa::77]:443 b01"
    change = (await store.read_changes("0-0", block_ms=100))[-1]
    assert (change.updated, change.removed) == (("b01",), ("b02",))


async def test_a_version_floor_makes_the_write_skip_past_it(store, redis_server):
    """After a failover lost versions 2..5 the leader rewrites as 6, never reusing a number."""
    lease = await acquire(store, "a", 5000)
    assert await store.apply(lease, 0, [b(1)], []) == 1
    assert await store.apply(lease, 1, [b(2)], [], floor=5) == 6
    assert await store.apply(lease, 6, [b(3)], [], floor=2) == 7  # a lower floor changes nothing
    with redis_server.client() as c:
        assert [int(f[b"version"]) for _, f in c.xrange(KEYS.changes)] == [1, 6, 7]


async def test_an_epoch_floor_gives_a_new_leadership_a_higher_epoch(store):
    """A failover that lost the INCR of our last leadership still gives us a new epoch."""
    lease, _ = await store.try_acquire("a", 2000, 0, epoch_floor=4)
    assert lease.epoch == 5
    await store.release(lease)
    lease, _ = await store.try_acquire("a", 2000, 0, epoch_floor=2)
    assert lease.epoch == 6


@pytest.mark.parametrize("key, value, holds", [
    (KEYS.builders, "x", "holds a string, not the hash"),
    (KEYS.routes, ["r"], "holds a list, not the hash"),
    (KEYS.changes, "x", "holds a string, not the stream"),
    (KEYS.version, "seven", "holds a string that is not a number"),
])
async def test_a_key_of_the_wrong_type_refuses_the_whole_write_and_names_itself(store, redis_server, key, value,
                                                                               holds):
    """Redis does not roll a script back: a half-applied step would leave routes without a change entry."""
    lease, _ = await store.try_acquire("a", 5000)
    await store.apply(lease, 0, [b(1)], [])
    with redis_server.client() as c:
        c.delete(key)
        c.rpush(key, *value) if isinstance(value, list) else c.set(key, value)
    before = dump_all(redis_server)
    with pytest.raises(StoreMisuse) as caught:
        await store.apply(lease, 1, [b(2)], [b(1).id])
    err = caught.value
    assert (err.code, err.key) == ("WRONGTYPE", key) and holds in str(err)
    assert f"redis-cli DEL '{key}'" in str(err)
    assert dump_all(redis_server) == before, "nothing written"


async def test_a_wrong_type_in_a_read_names_the_key(store, redis_server):
    with redis_server.client() as c:
        c.sadd(KEYS.builders, "x")
    with pytest.raises(StoreMisuse, match=r"\{xds\}:builders holds a set, not the hash flyxds keeps there"):
        await store.load()
    with redis_server.client() as c:
        c.hset(KEYS.epoch, "x", "1")
    with pytest.raises(StoreMisuse, match=r"\{xds\}:epoch holds a hash, not the string"):
        await store.try_acquire("a", 2000)
