"""A provisioner credential cannot expose what is not a builder (issue 23), with real processes.

Redis 7 with the shipped ACL file over TLS (each service with its own user; the intents are
appended with the ``provisioner`` user), the DNS stand-in answering machines of two apps
(four builders and a database, each a TLS listener on the builder port answering its own
SNI), the fly-source discoverer with ``--app builders`` (org-wide, and per-app: there the
leader reads the other apps' addresses from ``<app>.internal``), one xds-server and a real
Envoy.
A register intent for the database's address or id is rejected and the database is never
reachable through Envoy, while a new builder DNS does not list yet is routed at once; the
caps on unconfirmed registrations hold and a mass deregistration is held.
"""
from __future__ import annotations

import time

import orjson
import pytest

from harness.envoy import REFUSED
from harness.metrics import sample
from harness.procs import free_port, wait_until
from shared.keys import Keys
from tests.support.plane import sni, start_fly_plane
from tools.flyzone import FlyBuilder

from .conftest import needs_redis7

pytestmark = [needs_redis7, pytest.mark.e2e, pytest.mark.timeout(120)]
KEYS = Keys()
BUILDERS = [FlyBuilder(f"b000000000000{n}", "builders", f"127.0.0.{n + 1}", "ord") for n in range(1, 5)]
PG = FlyBuilder("d0000000000001", "pg-main", "127.0.0.6", "ord")  # a database machine of the same org
NEW = FlyBuilder("a0000000000001", "builders", "127.0.0.7", "ord")  # just started: DNS does not list it yet
ATTACK = FlyBuilder("a00000000000ff", "builders", PG.ip, "ord")  # a builder id at the database's address


def append(prov, request: str, **fields) -> dict:
    """XADD as the provisioner does, then its outcome (read with the same user)."""
    prov.xadd(KEYS.intents, {**fields, "request": request})
    return orjson.loads(wait_until(lambda: prov.get(KEYS.outcome(request)), 10, interval=0.005,
                                   what=f"the outcome of {request}"))


def register(prov, request: str, m: FlyBuilder, **more) -> dict:
    return append(prov, request, op="register", id=m.id, address=m.ip, app=m.app, region=m.region, **more)


def records_ever_written(admin) -> list[dict]:
    return [r for _, e in admin.xrange(KEYS.changes) for r in orjson.loads(e[b"records"])]


@pytest.mark.parametrize("mode", ["org-wide", "per-app"])
def test_a_provisioner_cannot_route_another_apps_machine(tmp_path, secure_redis, dns_server, procs, mode):
    url, client = secure_redis
    metrics = free_port()
    plane = start_fly_plane(tmp_path, procs, url("discoverer"), dns_server, [*BUILDERS, PG], app="builders",
                            unlisted=[NEW], xds_redis_url=url("xds"),
                            discoverer_args=["--metrics-listen", f"127.0.0.1:{metrics}", "--confirm-grace", "60",
                                             "--max-unconfirmed", "2", "--mass-deregistration-share", "0.25",
                                             *(["--per-app"] if mode == "per-app" else [])])
    for m in BUILDERS:
        wait_until(lambda: plane.reach(m) == sni(m), 30, what=f"builder {m.id}")
    prov, admin = client("provisioner"), client("admin")

    out = register(prov, "attack-address", ATTACK)
    assert (out["status"], out["reason"]) == ("rejected", "address_of_other_app"), out
    out = register(prov, "attack-id", PG._replace(app="builders"))
    # per-app mode reads the other apps' addresses (<app>.internal), not their ids
    assert (out["status"], out["reason"]) == ("rejected", "id_of_other_app" if mode == "org-wide"
                                              else "address_of_other_app"), out
    plane.discoverer.wait_for_log("request attack-address: register", 5)  # the WARNING names the request
    assert sample(metrics, "discoverer_intents_rejected_total", reason="address_of_other_app") == (
        1 if mode == "org-wide" else 2)

    # the same intent for a machine DNS does not list yet: routed within milliseconds of its append
    assert plane.reach(NEW) is REFUSED
    t0 = time.monotonic()
    assert register(prov, "new", NEW)["status"] == "applied"
    wait_until(lambda: plane.reach(NEW) == sni(NEW), 10, interval=0.005, what="the new builder through Envoy")
    print(f"new builder reachable {1000 * (time.monotonic() - t0):.0f} ms after its intent was appended")
    for m in (PG, ATTACK):
        assert plane.reach(m, verify=False) is REFUSED, f"{m.id} at the database's address reachable"
    assert PG.ip not in {r["address"] for r in records_ever_written(admin)}, "the database was routed at some point"
    assert plane.envoy.clusters() == {sni(m) for m in (*BUILDERS, NEW)}

    # bounded trust: --max-unconfirmed 2, and registering again neither counts twice nor extends the grace
    first = orjson.loads(admin.hget(KEYS.builders, NEW.id))["registered_at"]
    assert register(prov, "new-again", NEW)["status"] == "applied"
    assert orjson.loads(admin.hget(KEYS.builders, NEW.id))["registered_at"] == first
    second = FlyBuilder("a0000000000002", "builders", "127.0.0.8", "ord")
    assert register(prov, "second", second)["status"] == "applied"
    out = register(prov, "third", FlyBuilder("a0000000000003", "builders", "127.0.0.9", "ord"))
    assert (out["status"], out["reason"]) == ("rejected", "too_many_unconfirmed"), out

    # a deregistration of a builder DNS lists is applied and counted; past 1 of the 4 within the grace it is held
    assert append(prov, "stop-1", op="deregister", id=BUILDERS[0].id)["status"] == "applied"
    wait_until(lambda: plane.reach(BUILDERS[0]) is REFUSED, 10, what="the deregistered builder's route gone")
    plane.discoverer.wait_for_log(f"deregistered {BUILDERS[0].id}, which DNS still lists", 5)
    out = append(prov, "stop-2", op="deregister", id=BUILDERS[1].id)
    assert (out["status"], out["reason"]) == ("rejected", "mass_deregistration"), out
    plane.discoverer.wait_for_log("ERROR", 5)
    assert "mass deregistration held" in plane.discoverer.log()
    assert plane.reach(BUILDERS[1]) == sni(BUILDERS[1])
    assert sample(metrics, "discoverer_listed_deregistrations_total") == 1
    assert "NOPERM" not in plane.discoverer.log()
