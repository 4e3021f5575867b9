"""discoverer.rejections against a real redis-server: written only on change, dropped when DNS stops
rejecting, intent rejections aged out, and a Redis outage never raised to the poll."""
from __future__ import annotations

import asyncio

import orjson

from discoverer.intents import Intent
from discoverer.rejections import Rejections
from discoverer.sources import Answer
from discoverer.validate import Validated
from shared.errors import RecordError


def answer_with(*errors: RecordError) -> tuple[Answer, Validated]:
    return Answer(), Validated(rejected=list(errors))


async def held(store) -> dict:
    return {k: orjson.loads(v) for k, v in (await store.client.hgetall(store.keys.rejections)).items()}


async def test_written_on_change_and_dropped_when_no_longer_rejected(store):
    rec = Rejections(store)
    outside = RecordError("address_not_allowed", "8.8.8.8", subject="c1")
    rec.note_answer(*answer_with(outside, RecordError("not_utf8", "b'\\xff'")))  # no id: nothing to look up by
    await rec.write()
    first = await held(store)
    assert list(first) == [b"c1"] and first[b"c1"]["reason"] == "address_not_allowed"
    assert first[b"c1"]["source"] == "dns"
    rec.note_answer(*answer_with(RecordError("address_not_allowed", "8.8.8.8", subject="c1")))  # same: no write
    assert not rec._pending
    rec.note_answer(*answer_with(RecordError("bad_id", "x", subject="c9")))
    rec.note_answer(*answer_with(RecordError("bad_port", "0", subject="c2")))  # c9 gone before any write
    assert set(rec._pending) == {"c2"}
    await rec.write()
    assert list(await held(store)) == [b"c2"]


async def test_intent_rejections_age_out_and_a_redis_outage_is_not_raised(store, redis_server):
    rec = Rejections(store, max_age=60)
    it = Intent("1-0", "1-0", "register", "i1")
    rec.note_intent(it, {"status": "applied"})
    assert not rec._pending, "only rejections are kept"
    rec.note_intent(it, {"status": "rejected", "reason": "dns_conflict", "detail": "DNS lists i1 elsewhere"})
    await rec.write()
    entry = (await held(store))[b"i1"]
    assert entry["source"] == "intent" and entry["entry"] == "1-0"
    rec._age(entry["at"] + 30)
    assert not rec._dropped
    rec._age(entry["at"] + 61)
    await rec.write()
    assert await held(store) == {}
    redis_server.stop()
    rec.note_answer(*answer_with(RecordError("bad_port", "0", subject="c3")))
    async with asyncio.timeout(10):
        await rec.step()  # logs and tries again later
    assert rec.due.is_set() and "c3" in rec._pending
