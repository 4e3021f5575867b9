"""The harness itself: a plane built from a spec runs the whole system; its host seam and its one wait."""
from __future__ import annotations

import pytest

from harness.host import Host, hostport
from harness.plane import Plane, Region, Spec, sni
from harness.wait import async_wait_until, wait_until
from tools.flyzone import FlyBuilder

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def test_a_plane_from_a_spec_routes_a_builder_in_dns_and_stops_every_part(tmp_path):
    spec = Spec(regions={"ord": Region(discoverers=2, replicas=1, envoys=1)})
    machine = FlyBuilder("b0000000000001", "builder", "127.0.0.2", "ord")
    with Plane.from_spec(tmp_path, spec) as plane:
        envoy = plane.envoys[0]
        assert envoy.clusters() == set(), "no builder in DNS yet: nothing routed"
        plane.dns.set_builders([machine])
        wait_until(lambda: envoy.clusters() == {sni(machine.id)}, 20, what="the builder's cluster in Envoy")
        assert [r.region for r in plane.replicas] == ["ord"] and len(plane.discoverers) == 2
        procs = list(plane.procs.procs)
    assert procs and not any(p.alive for p in procs), "close() stopped every process"
    assert plane.redis.proc is None and plane.dns.proc is None


def test_a_host_runs_commands_under_its_prefix_and_names_its_address():
    ns = Host("ams", "fdaa:0:1::2", ("ip", "netns", "exec", "ams"))
    assert ns.argv(["discoverer", 1]) == ["ip", "netns", "exec", "ams", "discoverer", "1"]
    assert ns.hostport(53) == "[fdaa:0:1::2]:53" and hostport("127.0.0.1", 53) == "127.0.0.1:53"


def test_wait_until_returns_the_value_times_out_and_can_fail_at_once():
    calls = iter([0, 0, 7])
    assert wait_until(lambda: next(calls), 5, interval=0) == 7
    with pytest.raises(TimeoutError, match="never"):
        wait_until(lambda: False, 0.05, what="never")

    def broken():
        raise KeyError("boom")
    with pytest.raises(KeyError):
        wait_until(broken, 5, ignore=())


async def test_async_wait_until_takes_plain_and_async_predicates():
    async def answer():
        return 42
    assert await async_wait_until(answer, 1) == 42
    assert await async_wait_until(lambda: "plain", 1) == "plain"
