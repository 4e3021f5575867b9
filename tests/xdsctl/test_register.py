"""xdsctl register --wait: which Envoys must have ACKed what (pure: ``fleet_state`` and ``serves``)."""
from __future__ import annotations

from shared.status import EnvoyStatus, ReplicaStatus
from xdsctl.register import fleet_state, serves

NOW = 1000.0


def replica(routing: str = "sni_cluster", scope: str = "all", version: int = 7) -> ReplicaStatus:
    return ReplicaStatus.from_json({"routing": routing, "region_scope": scope, "version": version, "heartbeat": NOW})


def envoy(region: str, cds: str, lds: str = "1", replica_id: str = "r1", heartbeat: float = NOW) -> EnvoyStatus:
    return EnvoyStatus.from_json({"replica": replica_id, "region": region, "acked": {"cds": cds, "lds": lds},
                                  "heartbeat": heartbeat})


OUTCOME = {"status": "applied", "version": 7, "region": "ord"}


def test_local_scope_waits_only_for_the_builders_region():
    replicas = {"r1": replica(scope="local")}
    envoys = {"e-ord": envoy("ord", "6"), "e-ams": envoy("ams", "3")}
    assert fleet_state(replicas, envoys, OUTCOME, True, NOW) == ([], [
        {"node": "e-ord", "replica": "r1", "region": "ord", "acked": {"cds": "6", "lds": "1"}}])
    envoys["e-ord"] = envoy("ord", "7")
    assert fleet_state(replicas, envoys, OUTCOME, True, NOW) == (["e-ord"], [])


def test_scope_all_waits_for_every_live_envoy_and_ignores_stale_ones():
    replicas = {"r1": replica()}
    envoys = {"a": envoy("ord", "7"), "b": envoy("ams", "6"), "gone": envoy("ams", "1", heartbeat=NOW - 60)}
    done, waiting = fleet_state(replicas, envoys, OUTCOME, True, NOW)
    assert done == ["a"] and [w["node"] for w in waiting] == ["b"]


def test_filter_chains_needs_the_listener_and_a_bridge_counts_for_registering():
    rep = replica("filter_chains")
    assert not serves(envoy("ord", "7-bridge", "6"), rep, OUTCOME, True)
    assert serves(envoy("ord", "7-bridge", "7"), rep, OUTCOME, True)
    assert serves(envoy("ord", "6", "7"), rep, OUTCOME, False)  # deregistered: the listener no longer routes it


def test_on_demand_needs_the_replica_to_hold_the_version():
    assert not serves(envoy("ord", "1"), replica("on_demand", version=6), OUTCOME, True)
    assert serves(envoy("ord", "1"), replica("on_demand", version=7), OUTCOME, True)



def test_an_unknown_replica_counts_as_showing_every_builder_by_cds():
    assert serves(envoy("ams", "9"), None, OUTCOME, True) is True
    assert serves(envoy("ams", "6"), None, OUTCOME, True) is False


def test_deregistering_an_unknown_id_waits_for_nobody():
    assert serves(envoy("ord", "1"), replica(), {"status": "applied", "version": 9}, False) is None
