"""A discoverer's ``{xds}:discoverers`` entry follows its role and its writes at once, not at the next refresh.

The refresh period here is a minute, far longer than any test waits: an entry
that says ``leader`` with the builders written can only come from the
publish that a role change or a write triggers.
"""
from __future__ import annotations

import json

import pytest

from shared.keys import Keys

from .test_loop import FakeSource, nodes, rec, routes  # noqa: F401 - nodes is a fixture
from .test_survival import wait

pytestmark = [pytest.mark.timeout(60)]
KEYS = Keys()
NEVER = 60.0  # the periodic refresh, never reached in this test


def entry(redis_server, holder: str) -> dict | None:
    with redis_server.client() as c:
        raw = c.hget(KEYS.discoverers, holder)
    return json.loads(raw) if raw else None


async def test_the_entry_follows_leadership_and_writes_at_once(nodes, redis_server):
    source = FakeSource([rec(1), rec(2)])
    a = await nodes("a", source, status_every=NEVER)
    async with a.service:
        await wait(lambda: len(routes(redis_server)) == 2, what="the first set written")
        await wait(lambda: (entry(redis_server, "a") or {}).get("builders") == 2, what="the entry after the write")
        assert entry(redis_server, "a")["role"] == "leader"
        source.records.append(rec(3))
        await wait(lambda: (entry(redis_server, "a") or {}).get("builders") == 3, what="the entry after a change")
        await a.election.release()
        await wait(lambda: (entry(redis_server, "a") or {}).get("role") == "standby", what="standby after release")
