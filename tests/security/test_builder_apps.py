"""Only the named Fly apps are builders, end to end with real processes.

Fly's ``_instances.internal`` lists every started machine of the organisation. Here the DNS
stand-in answers machines of four apps, each machine a TLS listener on the builder port that
would answer its own SNI: the builders, the control plane's own ADS replica, the edge Envoy
and a database. The discoverer runs with ``--app builders``; through a real Envoy every
builder is reachable and no other machine is, although each listens and is in the allow-list.
"""
from __future__ import annotations

import pytest

from harness.envoy import REFUSED
from harness.procs import wait_until
from shared.keys import Keys
from tests.support.plane import sni, start_fly_plane
from tools.flyzone import FlyBuilder

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
BUILDERS = [FlyBuilder("b0000000000001", "builders", "127.0.0.2", "ord"),
            FlyBuilder("b0000000000002", "builders", "127.0.0.3", "ams")]
OTHERS = [FlyBuilder("c0000000000001", "flyxds-xds", "127.0.0.4", "ord"),  # the control plane's own machine
          FlyBuilder("e0000000000001", "flyxds-edge", "127.0.0.5", "ord"),
          FlyBuilder("d0000000000001", "pg-main", "127.0.0.6", "ord")]


def test_only_machines_of_the_builder_apps_are_reachable(tmp_path, redis_server, dns_server, procs):
    plane = start_fly_plane(tmp_path, procs, redis_server.url, dns_server, BUILDERS + OTHERS, app="builders")
    for m in BUILDERS:
        wait_until(lambda: plane.reach(m) == sni(m), 20, what=f"builder {m.id}")
    routes = {k.decode() for k in redis_server.client().hkeys(Keys().routes)}
    assert routes == {sni(m) for m in BUILDERS}
    for m in OTHERS:
        assert plane.reach(m, verify=False) is REFUSED, f"{m.app} machine reachable"
    assert plane.envoy.clusters() == {sni(m) for m in BUILDERS}
