"""Status entries' staleness: one rule for every reader and pruner (shared.keys.stale)."""
from __future__ import annotations

from shared.keys import STALE_AFTER, stale


def test_an_entry_is_stale_past_the_limit_or_without_a_readable_stamp():
    now = 1000.0
    assert not stale({"heartbeat": now - STALE_AFTER + 1}, now)
    assert stale({"heartbeat": now - STALE_AFTER - 1}, now)
    assert not stale({"updated_at": str(now)}, now, stamp="updated_at")
    for corrupt in ({}, {"corrupt": True}, {"heartbeat": "yesterday"}, {"heartbeat": None}):
        assert stale(corrupt, now)
    assert stale({"heartbeat": now - 3}, now, after=2)
