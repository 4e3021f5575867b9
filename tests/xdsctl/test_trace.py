"""xdsctl.trace: the stages decided from Facts (pure), for the cases the live tests do not reach:
region scope, Envoys behind, replicas lagging or gone, a trimmed change stream."""
from __future__ import annotations

from shared.model import Builder
from shared.status import EnvoyStatus, ReplicaStatus, read
from shared.store import Change
from xdsctl.trace import Facts, stages

NOW = 1_800_000_000.0
B = Builder("a1", "builder", "syd", "127.0.0.2", 443, "a1.builders.internal")


def facts(**kw) -> Facts:
    base = dict(id="a1", sni=B.sni, builder=B, rejection=None, deregistered_until=0.0, intents=[],
                changes=[Change("1-0", 4, 1, ("a1",), (), ())], version=6, leader="d1",
                replicas={"x-ord": {"version": 6, "region_scope": "local", "region": "ord"},
                          "x-syd": {"version": 6, "region_scope": "local", "region": "syd"}},
                envoys={"e-ord": {"replica": "x-ord", "region": "ord", "acked": {"cds": "6"}},
                        "e-syd": {"replica": "x-syd", "region": "syd", "acked": {"cds": "6"}}})
    merged = {**base, **kw}
    merged["replicas"], merged["envoys"] = read(merged["replicas"], ReplicaStatus), read(merged["envoys"], EnvoyStatus)
    return Facts(**merged)


def test_only_envoys_of_its_region_count_behind_local_replicas():
    trace = stages(facts(), NOW)
    assert [s.ok for s in trace] == [True] * 5
    assert trace[4].data["acked"] == {"syd": ["e-syd"]}, "e-ord is behind a local replica of another region"


def test_an_envoy_behind_fails_stage_5_and_names_what_it_acked():
    envoys = {"e-syd": {"replica": "x-syd", "region": "syd", "acked": {"cds": "3"}}}
    s5 = stages(facts(envoys=envoys), NOW)[4]
    assert s5.ok is False and s5.data["behind"] == {"syd": ["e-syd (acked cds=3)"]}


def test_no_envoy_that_should_route_it_fails_stage_5():
    envoys = {"e-ord": {"replica": "x-ord", "region": "ord", "acked": {"cds": "6"}}}
    s5 = stages(facts(envoys=envoys), NOW)[4]
    assert s5.ok is False and "no live Envoy should route it" in s5.says and "--region-scope" in s5.fix


def test_replicas_lagging_or_gone_fail_stage_4():
    lagging = stages(facts(replicas={"x-syd": {"version": 3, "region": "syd"}}), NOW)[3]
    assert lagging.ok is False and lagging.data["behind"] == {"syd": ["x-syd (v3)"]}
    assert stages(facts(replicas={}), NOW)[3].says.startswith("no live ADS replica")


def test_a_trimmed_stream_still_gives_a_version_that_holds_it():
    s3 = stages(facts(changes=[Change("9-0", 5, 1, ("b2",), (), ())]), NOW)[2]
    assert s3.ok and s3.data == {"since": 4} and "before the oldest change kept" in s3.says


def test_an_unconfirmed_registration_and_one_since_removed():
    registered = Builder("a1", "builder", "syd", "127.0.0.2", 443, B.sni, source="intent", registered_at=NOW - 5)
    intents = [{"entry": "7-0", "op": "register", "outcome": {"status": "applied", "version": 4}}]
    s1 = stages(facts(builder=registered, intents=intents), NOW)[0]
    assert s1.ok and "registered by an intent (entry 7-0, applied at version 4)" in s1.says
    gone = stages(facts(builder=None, intents=intents), NOW)
    assert gone[0].ok is False and "since removed" in gone[0].says and gone[1].ok is None
