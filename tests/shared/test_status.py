"""Status entries (shared.status): one record per hash, read without raising, one staleness rule."""
from __future__ import annotations

import pytest

from shared.status import STALE_AFTER, DiscovererStatus, EnvoyStatus, ReplicaStatus, fresh, stale


def test_an_entry_is_stale_past_the_limit_or_without_a_readable_stamp():
    now = 1000.0
    assert not EnvoyStatus.from_json({"heartbeat": now - STALE_AFTER + 1}).stale(now)
    assert EnvoyStatus.from_json({"heartbeat": now - STALE_AFTER - 1}).stale(now)
    assert not DiscovererStatus.from_json({"updated_at": now}).stale(now)
    for corrupt in ({}, {"corrupt": True}, {"heartbeat": "yesterday"}, {"heartbeat": None}, "garbage", None):
        assert ReplicaStatus.from_json(corrupt).stale(now)
    assert stale(now - 3, now, after=2) and not stale(now - 1, now, after=2)


@pytest.mark.parametrize("record", [ReplicaStatus, EnvoyStatus, DiscovererStatus])
def test_a_record_survives_its_own_json(record):
    filled = record.from_json({})
    assert record.from_json(filled.to_json()) == filled


def test_missing_or_garbage_fields_read_as_defaults():
    r = ReplicaStatus.from_json({"id": "r1", "streams": "many", "version": "12-bridge", "ready": "yes",
                                 "heartbeat": 5, "workers": 2})
    assert (r.id, r.streams, r.version, r.ready, r.heartbeat, r.workers) == ("r1", 0, 12, True, 5.0, 2)
    e = EnvoyStatus.from_json({"node": "n", "kind": "delta", "acked": ["cds"], "last_nack": "bad"})
    assert (e.transport, e.acked, e.last_nack) == ("delta", {}, None)
    assert e.to_json()["kind"] == "delta" and "refused" not in e.to_json()
    d = DiscovererStatus.from_json({"role": "leader", "epoch": True, "pid": 7.0})
    assert (d.role, d.epoch, d.pid) == ("leader", None, 7)


def test_fresh_hides_the_stale_and_sorts():
    now = 1000.0
    entries = {"b": {"heartbeat": now}, "a": {"heartbeat": now}, "old": {"heartbeat": 1.0}, "bad": {"corrupt": True}}
    assert list(fresh(entries, EnvoyStatus, now)) == ["a", "b"]
