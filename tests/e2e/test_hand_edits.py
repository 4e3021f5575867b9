"""A hand edit of the builder set (redis-cli HDEL) is noticed, logged and undone, end to end.

redis-server, the DNS stand-in, one discoverer, one xds-server, one Envoy, TLS builders.
The keys are the leader's alone: an HDEL changes Redis but not the version, so no replica
hears of it. The leader's periodic check sees the set shrink, logs an error and writes its
set back; when the builder also leaves DNS, its removal reaches Envoy as usual.
"""
from __future__ import annotations

import pytest

from harness.procs import wait_until
from shared.keys import Keys
from tests.support.plane import sni, start_fly_plane
from tools.flyzone import FlyBuilder

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
KEYS = Keys()
A = FlyBuilder("a0000000000001", "builder", "127.0.0.2", "ord")
B = FlyBuilder("b0000000000002", "builder", "127.0.0.3", "ord")


def test_an_hdel_by_hand_is_logged_and_rewritten_and_envoy_stays_in_step(tmp_path, redis_server, dns_server, procs):
    plane = start_fly_plane(tmp_path, procs, redis_server.url, dns_server, [A, B], app="builder",
                            discoverer_args=["--removal-grace", "0.3"])
    wait_until(lambda: plane.reach(B) == sni(B), 20, what="B through Envoy")
    r, disc = redis_server.client(), plane.discoverer

    r.hdel(KEYS.builders, B.id)  # what an operator might do to drop B by hand
    disc.wait_for_log("changed by hand", 3)
    assert "ERROR" in next(line for line in disc.log().splitlines() if "changed by hand" in line)
    wait_until(lambda: r.hexists(KEYS.builders, B.id), 3, what="B written back")
    assert plane.reach(B) == sni(B)

    r.hdel(KEYS.builders, B.id)  # again, and this time B also leaves DNS before any check
    dns_server.set_builders([A])
    wait_until(lambda: plane.envoy.clusters() == {sni(A)}, 10, what="Envoy drops B")
    assert plane.reach(A) == sni(A)
    assert not r.hexists(KEYS.builders, B.id) and disc.log().count("changed by hand") >= 2
