"""Registration intents: the checks every entry goes through, and how the planner reconciles them with DNS.

Pure functions, no I/O: ``parse_intent`` on raw stream fields, ``Planner.plan``
with DNS answers (``validate``) and intents at chosen clocks.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from discoverer.plan import Planner
from discoverer.rules import Rules
from discoverer.validate import validate
from discoverer.intents import MAX_VALUE, parse_intent
from shared.model import DEFAULT_ALLOWED_NETWORKS, SOURCE_DNS, SOURCE_INTENT, parse_networks
from shared.store import IntentEntry

RULES = Rules(sni_template="{id}.builders.internal", port=443, allowed=parse_networks(DEFAULT_ALLOWED_NETWORKS),
              grace=0.5, mass_share=0.5, mass_hold=5.0, confirm_grace=30.0)
_seq = iter(range(1, 10**6))


def entry(**fields) -> IntentEntry:
    return IntentEntry(f"1000-{next(_seq)}", {k.encode(): str(v).encode() for k, v in fields.items()})


def reg(bid: str = "b01", address: str = "fdaa::1", **more):
    return entry(**{"op": "register", "id": bid, "address": address, "app": "web", "region": "ams", **more})


def intent(e: IntentEntry, wall: float = 1000.0, rules: Rules = RULES):
    return parse_intent(e, rules, wall)


def dns(*records: tuple[str, str], now: float = 0.0):
    return validate([{"id": i, "app": "web", "region": "ams", "ip": ip} for i, ip in records], RULES, now)


# ---------------------------------------------------------------- parse_intent


def test_a_register_becomes_an_unconfirmed_builder_with_its_registration_time():
    it = intent(reg("b01", "fdaa::7", port="8443"), wall=1234.5)
    assert it.error is None and (it.op, it.id, it.request) == ("register", "b01", it.entry_id)
    b = it.builder
    assert (b.address, b.port, b.sni, b.source, b.registered_at) == (
        "fdaa::7", 8443, "b01.builders.internal", SOURCE_INTENT, 1234.5)


def test_the_caller_names_where_its_outcome_goes():
    assert intent(reg(request="prov-42:a.b_c")).request == "prov-42:a.b_c"
    assert intent(entry(op="deregister", id="b01")).request.startswith("1000-")


@pytest.mark.parametrize("fields, reason", [
    ({"op": "register", "address": "fdaa::1", "app": "web", "region": "ams"}, "missing_field"),
    ({"op": "register", "id": "b01", "app": "web", "region": "ams"}, "missing_field"),
    ({"id": "b01", "address": "fdaa::1"}, "missing_field"),
    ({"op": "register", "id": "b01", "address": "fdaa::1", "app": "web"}, "missing_field"),  # no region, no default
    ({"op": "upsert", "id": "b01", "address": "fdaa::1"}, "unknown_op"),
    ({"op": "register", "id": "b01", "address": "8.8.8.8", "app": "web", "region": "ams"}, "address_not_allowed"),
    ({"op": "register", "id": "b01", "address": "not-an-ip", "app": "web", "region": "ams"}, "bad_address"),
    ({"op": "register", "id": "../etc", "address": "fdaa::1", "app": "web", "region": "ams"}, "bad_id"),
    ({"op": "deregister", "id": "bad id"}, "bad_id"),
    ({"op": "register", "id": "b01", "address": "fdaa::1", "app": "web", "region": "ams", "port": "0"}, "bad_port"),
    ({"op": "register", "id": "b01", "address": "fdaa::1", "app": "web", "region": "ams", "port": "65536"},
     "bad_port"),
    ({"op": "register", "id": "b01", "address": "fdaa::1", "app": "web", "region": "ams", "port": "-1"}, "bad_port"),
    ({"op": "register", "id": "b01", "address": "fdaa::1", "app": "web", "region": "ams", "port": "x"}, "bad_port"),
    ({"op": "register", "id": "b01", "address": "fdaa::1", "app": "Web!", "region": "ams"}, "bad_app"),
    ({"op": "register", "id": "b01", "address": "fdaa::1", "app": "web", "region": "ams", "colour": "red"},
     "unknown_field"),
    ({"op": "register", "id": "b01", "address": "fdaa::1", "app": "web", "region": "ams", "request": "a b"},
     "bad_request"),
    ({"op": "register", "id": "b" * 5000, "address": "fdaa::1", "app": "web", "region": "ams"}, "value_too_long"),
    ({"op": "register", "id": "b01", "address": "fdaa::1", "app": "web", "region": "x" * 5120}, "value_too_long"),
])
def test_bad_intents_are_rejected_with_a_reason(fields, reason):
    it = intent(entry(**fields))
    assert it.builder is None and it.error is not None and it.error.reason == reason, it.error


def test_a_value_at_the_cap_is_fine_and_one_byte_more_is_not():
    ok = intent(reg(request="r" * 128))
    assert ok.error is None
    assert intent(reg(app="a" * (MAX_VALUE + 1))).error.reason == "value_too_long"


def test_non_utf8_is_rejected():
    e = IntentEntry("1-1", {b"op": b"register", b"id": b"\xff\xfe", b"address": b"fdaa::1"})
    assert intent(e).error.reason == "bad_encoding"


def test_app_and_region_default_to_the_discoverers_single_app_and_region():
    rules = replace(RULES, apps=frozenset({"builder"}), regions=frozenset({"ord"}))
    it = parse_intent(entry(op="register", id="b01", address="fdaa::1"), rules, 1.0)
    assert (it.builder.app, it.builder.region) == ("builder", "ord")
    other = parse_intent(entry(op="register", id="b01", address="fdaa::1", app="web"), rules, 1.0)
    assert other.error.reason == "not_wanted"  # an app this discoverer does not route


# ---------------------------------------------------------------- reconciliation


def registered(planner: Planner, cur: dict, seen, wall: float, *intents):
    return planner.plan(cur, seen, now=wall, wall=wall, intents=[intent(e, wall) for e in intents])


def test_registration_routes_at_once_then_dns_confirms_it_without_a_new_version():
    planner, cur = Planner(replace(RULES, mass_share=1.0)), {}
    plan = registered(planner, cur, dns(), 100.0, reg("b01", "fdaa::1"))
    assert [b.id for b in plan.upsert] == ["b01"] and plan.upsert[0].unconfirmed
    assert [out["status"] for _, out in plan.outcomes] == ["applied"] and plan.cursor
    cur = {"b01": plan.upsert[0]}
    plan = planner.plan(cur, dns(("b01", "fdaa::1")), now=101.0, wall=101.0)
    assert plan.upsert == [] and plan.remove == []
    assert [(b.id, b.source, b.registered_at) for b in plan.touch] == [("b01", SOURCE_DNS, 100.0)]
    cur = {"b01": plan.touch[0]}
    # from now on DNS owns it: gone from DNS, it goes after the removal grace, not the confirm grace
    planner.plan(cur, dns(), now=102.0, wall=102.0)
    assert planner.plan(cur, dns(), now=102.6, wall=102.6).remove == ["b01"]


def test_a_registration_dns_never_confirms_is_removed_after_the_confirm_grace():
    planner = Planner(RULES)
    cur = {"b01": registered(planner, {}, dns(), 100.0, reg()).upsert[0]}
    assert not planner.plan(cur, dns(), now=129.9, wall=129.9)  # no removal grace for it: the confirm grace
    plan = planner.plan(cur, dns(), now=130.0, wall=130.0)
    assert plan.remove == ["b01"] and plan.expired == ["b01"]
    assert not planner.plan(cur, None, now=200.0, wall=200.0).remove  # the source failing is no evidence


def test_registering_again_does_not_extend_the_grace():
    planner = Planner(RULES)
    cur = {"b01": registered(planner, {}, dns(), 100.0, reg()).upsert[0]}
    plan = registered(planner, cur, dns(), 120.0, reg())
    assert not plan.upsert and not plan.touch and plan.outcomes[0][1]["status"] == "applied"
    assert planner.plan(cur, dns(), now=130.0, wall=130.0).expired == ["b01"]


def test_deregister_removes_at_once_and_dns_may_not_bring_it_back_during_the_grace():
    planner = Planner(RULES)
    listed = dns(("b01", "fdaa::1"), ("b02", "fdaa::2"))
    cur = dict(listed.builders)
    plan = registered(planner, cur, listed, 100.0, entry(op="deregister", id="b01"))
    assert plan.remove == ["b01"] and plan.deregistered == {"b01": 130.0}
    assert plan.outcomes[0][1]["region"] == "ams"  # what --wait needs to know which Envoys had it
    cur.pop("b01")
    dereg = {"b01": 130.0}
    assert not planner.plan(cur, listed, now=110.0, wall=110.0, deregistered=dereg)  # DNS still lists it: ignored
    later = planner.plan(cur, listed, now=130.0, wall=130.0, deregistered=dereg)
    assert [b.id for b in later.upsert] == ["b01"] and later.deregistration_ended == ["b01"]  # DNS insists: it is back


def test_registering_clears_a_deregistration():
    planner = Planner(RULES)
    plan = registered(planner, {}, dns(("b01", "fdaa::1")), 110.0, reg("b01", "fdaa::1"))
    assert plan.deregistration_ended == [] and [b.id for b in plan.upsert] == ["b01"]
    plan = planner.plan({}, dns(("b01", "fdaa::1")), now=110.0, wall=110.0, deregistered={"b01": 130.0},
                        intents=[intent(reg("b01", "fdaa::1"), 110.0)])
    assert plan.deregistration_ended == ["b01"] and [(b.id, b.source) for b in plan.upsert] == [("b01", SOURCE_DNS)]


def test_dns_at_another_address_wins_over_a_registration():
    planner = Planner(RULES)
    cur = {"b01": registered(planner, {}, dns(), 100.0, reg("b01", "fdaa::1")).upsert[0]}
    plan = planner.plan(cur, dns(("b01", "fdaa::9")), now=101.0, wall=101.0)
    assert [(b.address, b.source, b.registered_at) for b in plan.upsert] == [("fdaa::9", SOURCE_DNS, 100.0)]
    assert len(plan.conflicts) == 1 and "DNS wins" in plan.conflicts[0]
    # and a registration that contradicts what DNS lists is refused
    cur = {"b01": plan.upsert[0]}
    plan = registered(planner, cur, dns(("b01", "fdaa::9")), 102.0, reg("b01", "fdaa::1"))
    assert not plan.upsert and plan.cursor and len(plan.conflicts) == 1
    assert plan.outcomes[0][1]["status"] == "rejected" and plan.outcomes[0][1]["reason"] == "id_at_other_address"


def test_rejected_intents_change_nothing_but_move_the_cursor():
    planner = Planner(RULES)
    cur = dict(dns(("b01", "fdaa::1")).builders)
    bad = [entry(op="register", id="b02", address="8.8.8.8", app="web", region="ams"), entry(op="nope", id="x")]
    plan = registered(planner, cur, dns(("b01", "fdaa::1")), 100.0, *bad)
    assert not plan.upsert and not plan.remove and not plan.touch
    assert plan.cursor == bad[-1].entry_id
    assert [(o["status"], o["reason"]) for _, o in plan.outcomes] == [("rejected", "address_not_allowed"),
                                                                       ("rejected", "unknown_op")]


def test_a_later_intent_of_the_same_batch_supersedes_an_earlier_one():
    planner = Planner(RULES)
    plan = registered(planner, {}, dns(), 100.0, reg("b01"), entry(op="deregister", id="b01"))
    assert not plan.upsert and [o["status"] for _, o in plan.outcomes] == ["superseded", "applied"]


def test_an_sni_taken_by_another_builder_is_refused():
    planner = Planner(RULES)
    cur = dict(dns(("B01", "fdaa::1")).builders)  # SNI b01.builders.internal
    plan = registered(planner, cur, dns(("B01", "fdaa::1")), 100.0, reg("b01", "fdaa::2"))
    assert plan.outcomes[0][1]["reason"] == "duplicate_sni" and not plan.upsert
