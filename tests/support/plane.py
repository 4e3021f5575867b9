"""A DNS-fed control plane for one test, on the test's fixtures: TLS stand-in machines, the
fly-source discoverer, one xds-server (sni_cluster) and one Envoy (``harness.plane.Plane``)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from harness.envoy import insecure_context, tls_reach
from harness.host import free_port
from harness.plane import Plane, sni as builder_sni
from harness.procs import ProcGroup
from tools.flyzone import FlyBuilder


def sni(machine: FlyBuilder) -> str:
    return builder_sni(machine.id)


class FlyPlane(Plane):
    def reach(self, machine: FlyBuilder, *, verify: bool = True) -> str:
        """The name the machine answered with through Envoy, or how it was not routed (NotRouted)."""
        ctx = self.ctx if verify else insecure_context()
        return tls_reach(self.envoy.listener_port, sni(machine), ctx)


def start_fly_plane(tmp: Path, procs: ProcGroup, redis_url: str, dns_server, machines: Sequence[FlyBuilder], *,
                    app: str, discoverer_args: Sequence[str] = (), unlisted: Sequence[FlyBuilder] = (),
                    xds_redis_url: str | None = None) -> FlyPlane:
    """Every machine listens on one port and answers its own SNI; DNS lists them all but ``unlisted``
    (machines DNS does not know yet). ``xds_redis_url``: the replica's own (default ``redis_url``).
    The fixtures' ``procs``, Redis and DNS stop it all at teardown."""
    plane = FlyPlane(tmp, procs=procs, redis_url=redis_url)
    port = free_port("127.0.0.2")
    plane.start_builders({sni(m): (m.ip, port) for m in (*machines, *unlisted)})
    dns_server.set_builders(machines)
    plane.discoverer = plane.start_discoverer("--source", "fly", "--app", app, "--dns-server", dns_server.addr,
                                              "--builder-port", str(port), *discoverer_args, label="discoverer")
    replica = plane.start_replica("--routing", "sni_cluster", label="xds", redis_url=xds_redis_url)
    plane.envoy = plane.start_envoy("edge-1", ads=replica.target, routing="sni_cluster", directory=tmp / "envoy")
    plane.ctx = plane.client_context()
    return plane
