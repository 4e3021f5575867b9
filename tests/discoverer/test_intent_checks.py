"""The planner's checks of intents against DNS, and its bounds on what DNS has not confirmed (pure, no I/O).

DNS answers machines of the builder app ``web`` and of a database app ``pg``;
an intent may not route what DNS lists as something else.
"""
from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from discoverer.plan import Planner
from discoverer.validate import validate

from .test_intents import RULES, entry, intent, reg

WEB = replace(RULES, apps=frozenset({"web"}), max_unconfirmed=3, mass_deregistration_share=0.25)
PG = ("d01", "fdaa::d1", "pg")


def dns(*records: tuple[str, str, str]):
    return validate([{"id": i, "app": app, "region": "ams", "ip": ip} for i, ip, app in records], WEB, 0.0)


def plan(planner: Planner, cur: dict, seen, wall: float, *entries, **kw):
    return planner.plan(cur, seen, now=wall, wall=wall, intents=[intent(e, wall, WEB) for e in entries], **kw)


def reasons(p) -> list[str | None]:
    return [out.get("reason") for _, out in p.outcomes]


@pytest.mark.parametrize("fields, reason", [
    ({"id": "b09", "address": "fdaa::d1"}, "address_of_other_app"),  # the database's address
    ({"id": "d01", "address": "fdaa::99"}, "id_of_other_app"),  # the database's id
    ({"id": "d01", "address": "fdaa::d1"}, "id_of_other_app"),  # the database, exactly as DNS lists it
    ({"id": "b01", "address": "fdaa::99"}, "id_at_other_address"),
    ({"id": "b09", "address": "fdaa::1"}, "address_of_other_id"),  # another builder's address
])
def test_an_intent_may_not_route_what_dns_lists_as_something_else(fields, reason):
    seen = dns(("b01", "fdaa::1", "web"), PG)
    assert seen.builders.keys() == {"b01"}  # the database is not a builder ...
    p = plan(Planner(WEB), dict(seen.builders), seen, 100.0, reg(**fields))
    assert reasons(p) == [reason] and not p.upsert and not p.touch and p.cursor  # ... nor becomes one
    assert p.outcomes[0][1]["status"] == "rejected"


def test_the_checks_use_the_last_good_answer_while_dns_fails():
    known = dns(PG)
    p = plan(Planner(WEB), {}, None, 100.0, reg("b09", "fdaa::d1"), known=known)
    assert reasons(p) == ["address_of_other_app"] and not p.upsert
    p = plan(Planner(WEB), {}, None, 100.0, reg("b09", "fdaa::9"), known=known)  # negative: a new one is fine
    assert reasons(p) == [None] and [b.id for b in p.upsert] == ["b09"]


def test_in_per_app_mode_the_other_apps_addresses_are_checked_without_their_records():
    seen = dns(("b01", "fdaa::1", "web"))
    seen.other_apps = {"fdaa::d1": "pg"}  # what FlySource reads of <app>.internal in per-app mode
    p = plan(Planner(WEB), dict(seen.builders), seen, 100.0, reg("b09", "fdaa::d1"), reg("b08", "fdaa::8"))
    assert reasons(p) == ["address_of_other_app", None] and [b.id for b in p.upsert] == ["b08"]


def test_a_machine_dns_does_not_list_yet_is_routed_at_once():
    p = plan(Planner(WEB), {}, dns(PG), 100.0, reg("b09", "fdaa::9"))
    assert [(b.id, b.unconfirmed) for b in p.upsert] == [("b09", True)]


def test_at_most_max_unconfirmed_registrations_at_once():
    planner = Planner(WEB)
    p = plan(planner, {}, dns(), 100.0, *(reg(f"b0{i}", f"fdaa::{i}") for i in range(1, 6)))
    assert reasons(p) == [None, None, None, "too_many_unconfirmed", "too_many_unconfirmed"]
    cur = {b.id: b for b in p.upsert}
    assert len(cur) == 3
    again = plan(planner, cur, dns(), 101.0, reg("b01", "fdaa::1"))  # one already routed is not a new one
    assert reasons(again) == [None]
    listed = dns(("b01", "fdaa::1", "web"))  # DNS confirms one: room for another
    p = plan(planner, cur, listed, 102.0, reg("b04", "fdaa::4"))
    assert reasons(p) == [None] and {b.id for b in p.upsert} == {"b04"}


def test_re_registering_never_keeps_an_id_alive_past_the_grace_from_its_first_registration():
    planner = Planner(WEB)
    cur = {b.id: b for b in plan(planner, {}, dns(), 100.0, reg("b01")).upsert}
    dereg = plan(planner, cur, dns(), 110.0, entry(op="deregister", id="b01"))
    p = plan(planner, {}, dns(), 120.0, reg("b01"), deregistered=dereg.deregistered)  # back, after a deregister
    assert [b.registered_at for b in p.upsert] == [100.0]
    cur = {b.id: b for b in p.upsert}
    assert plan(planner, cur, dns(), 130.0).expired == ["b01"]
    late = plan(planner, {}, dns(), 131.0, reg("b01"))
    assert reasons(late) == ["unconfirmed_too_long"] and not late.upsert
    listed = dns(("b01", "fdaa::1", "web"))  # once DNS lists it, it is a builder like any other
    plan(planner, {}, listed, 140.0)
    assert reasons(plan(planner, {}, listed, 141.0, reg("b01"))) == [None]


def test_a_new_leader_honours_the_registration_time_in_redis():
    first = plan(Planner(WEB), {}, dns(), 100.0, reg("b01")).upsert[0]
    p = plan(Planner(WEB), {"b01": first}, dns(), 131.0, reg("b01"), reconcile=False)
    assert reasons(p) == ["unconfirmed_too_long"]


def fleet(n: int):
    return dns(*((f"b{i:02}", f"fdaa::{i}", "web") for i in range(1, n + 1)))


def test_deregistering_listed_builders_is_applied_and_counted_up_to_the_share(caplog):
    seen = fleet(8)
    planner = Planner(WEB)
    p = plan(planner, dict(seen.builders), seen, 100.0, *(entry(op="deregister", id=f"b0{i}") for i in (1, 2, 3)))
    assert reasons(p) == [None, None, "mass_deregistration"] and p.remove == ["b01", "b02"]
    assert p.deregistered_listed == ["b01", "b02"]
    assert "mass deregistration held" in caplog.text and caplog.records[-1].levelno == logging.ERROR
    later = plan(planner, {k: v for k, v in seen.builders.items() if k not in p.remove}, seen, 200.0,
                 entry(op="deregister", id="b03"), deregistered=p.deregistered)  # the earlier ones expired
    assert reasons(later) == [None] and later.remove == ["b03"]


def test_deregistering_what_dns_does_not_list_is_not_a_flood():
    seen = fleet(2)
    p = plan(Planner(WEB), dict(seen.builders), seen, 100.0, *(entry(op="deregister", id=f"x{i}") for i in range(5)))
    assert reasons(p) == [None] * 5 and not p.deregistered_listed
    one = plan(Planner(WEB), dict(seen.builders), seen, 100.0, entry(op="deregister", id="b01"))
    assert reasons(one) == [None]  # a fleet of two: one may always go
