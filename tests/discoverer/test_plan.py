"""discoverer.validate and discoverer.plan: validation and the planner (grace, mass-removal guard, duplicates)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from discoverer.plan import Planner
from discoverer.rules import Rules
from discoverer.validate import validate
from shared.model import DEFAULT_ALLOWED_NETWORKS, parse_networks

RULES = Rules(sni_template="{id}.builders.internal", port=443, allowed=parse_networks(DEFAULT_ALLOWED_NETWORKS),
              grace=0.5, mass_share=0.5, mass_hold=5.0)


def raw(i: int, **over) -> dict:
    return {"id": f"b{i:02d}", "app": "web", "region": "ams", "ip": f"fdaa::{i:x}", **over}


def seen(*records: dict, now: float = 100.0):
    return validate(list(records), RULES, now)


def current(n: int) -> dict:
    return dict(seen(*(raw(i) for i in range(n))).builders)


def test_validate_builds_sni_route_and_seen_at():
    out = seen(raw(1), now=42.0)
    b = out.builders["b01"]
    assert (b.sni, b.endpoint, b.route, b.seen_at) == ("b01.builders.internal", "[fdaa::1]:443", "[fdaa::1]:443 b01", 42.0)


def test_identical_duplicates_collapse_into_one():
    out = seen(raw(1), raw(1), raw(1))
    assert list(out.builders) == ["b01"] and out.rejected == [] and not out.uncertain


def test_conflicting_duplicate_ids_are_dropped_and_kept_as_they_are():
    out = seen(raw(1), raw(1, ip="fdaa::99"), raw(2))
    assert list(out.builders) == ["b02"]
    assert out.uncertain == {"b01"}
    assert [e.reason for e in out.rejected] == ["duplicate_id"]
    planner = Planner(RULES)
    cur = current(3)
    plan = planner.plan(cur, out, now=0.0)
    plan = planner.plan(cur, out, now=10.0)
    assert plan.remove == ["b00"]
    assert not any(b.id == "b01" for b in plan.upsert)


def test_duplicate_sni_keeps_one_deterministically():
    rules = replace(RULES, sni_template="{app}-{region}.builders.internal")
    out = validate([raw(2), raw(1)], rules, 0.0)
    assert list(out.builders) == ["b01"]
    assert [e.reason for e in out.rejected] == ["duplicate_sni"]
    assert list(validate([raw(1), raw(2)], rules, 0.0).builders) == ["b01"]


def test_reserved_names_are_never_an_sni():
    rules = replace(RULES, sni_template="{id}.invalid")
    out = validate([raw(1, id="no-route")], rules, 0.0)
    assert out.builders == {} and [e.reason for e in out.rejected] == ["reserved_sni"]


def test_additions_and_updates_apply_at_once_keeping_seen_at():
    cur = current(2)
    planner = Planner(RULES)
    plan = planner.plan(cur, seen(raw(0), raw(1, ip="fdaa::77"), raw(5), now=500.0), now=0.0)
    by_id = {b.id: b for b in plan.upsert}
    assert set(by_id) == {"b01", "b05"} and plan.remove == []
    assert by_id["b01"].address == "fdaa::77" and by_id["b01"].seen_at == 100.0
    assert by_id["b05"].seen_at == 500.0


def test_no_change_means_an_empty_plan():
    cur = current(3)
    plan = Planner(RULES).plan(cur, seen(*(raw(i) for i in range(3)), now=999.0), now=0.0)
    assert not plan and plan.upsert == [] and plan.remove == []


def test_a_removal_waits_for_the_grace_period():
    cur = current(4)
    planner = Planner(RULES)
    three = seen(*(raw(i) for i in range(3)))
    assert planner.plan(cur, three, now=10.0).remove == []
    assert planner.plan(cur, three, now=10.4).remove == []
    assert planner.plan(cur, three, now=10.5).remove == ["b03"]


def test_a_builder_that_comes_back_restarts_its_grace():
    cur = current(4)
    planner = Planner(RULES)
    three, four = seen(*(raw(i) for i in range(3))), seen(*(raw(i) for i in range(4)))
    planner.plan(cur, three, now=10.0)
    planner.plan(cur, four, now=10.3)
    assert planner.plan(cur, three, now=10.6).remove == []
    assert planner.plan(cur, three, now=11.1).remove == ["b03"]
    assert planner.missing_since  # still tracked until the write lands in `current`
    del cur["b03"]
    planner.plan(cur, three, now=11.2)
    assert planner.missing_since == {}


def test_a_rejected_record_counts_as_missing():
    cur = current(3)
    planner = Planner(RULES)
    bad = seen(raw(0), raw(1), raw(2, ip="10.0.0.1"))
    planner.plan(cur, bad, now=0.0)
    assert planner.plan(cur, bad, now=1.0).remove == ["b02"]


def test_mass_removal_is_held_then_applied_if_it_lasts(caplog):
    cur = current(10)
    planner = Planner(RULES)
    few = seen(raw(0), raw(1))
    planner.plan(cur, few, now=0.0)
    plan = planner.plan(cur, few, now=1.0)
    assert plan.remove == [] and plan.held == 8
    assert "mass removal held" in caplog.text
    assert planner.plan(cur, few, now=5.9).remove == []
    plan = planner.plan(cur, few, now=6.0)
    assert sorted(plan.remove) == [f"b{i:02d}" for i in range(2, 10)] and plan.held == 0


def test_a_held_mass_removal_is_forgotten_when_builders_return():
    cur = current(10)
    planner = Planner(RULES)
    few, all_ = seen(raw(0)), seen(*(raw(i) for i in range(10)))
    planner.plan(cur, few, now=0.0)
    planner.plan(cur, few, now=1.0)
    assert planner.mass_since == 1.0
    planner.plan(cur, all_, now=2.0)
    assert planner.mass_since is None
    planner.plan(cur, few, now=3.0)
    assert planner.plan(cur, few, now=7.0).remove == []  # due again only at 7.0: the hold starts over


def test_half_the_set_is_not_a_mass_removal():
    cur = current(4)
    planner = Planner(RULES)
    half = seen(raw(0), raw(1))
    planner.plan(cur, half, now=0.0)
    assert sorted(planner.plan(cur, half, now=0.5).remove) == ["b02", "b03"]


@pytest.mark.parametrize("n", [0, 1])
def test_small_sets(n):
    planner = Planner(RULES)
    plan = planner.plan(current(n), seen(), now=0.0)
    assert plan.upsert == [] and plan.remove == []


def test_an_app_filter_ignores_the_other_machines_of_the_org():
    rules = replace(RULES, apps=frozenset({"web"}))
    out = validate([raw(1), raw(2, app="xds"), raw(3, app="Web")], rules, 0.0)
    assert sorted(out.builders) == ["b01", "b03"] and out.ignored == 1 and out.rejected == []
