"""A DNS-fed control plane for one test: TLS stand-in machines, the fly-source discoverer,
one xds-server (sni_cluster) and one Envoy, all real processes on loopback."""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tools.flyzone import FlyBuilder
from tools.tls_backend import client_context

from .envoy import EnvoyProc, insecure_context, start_backends, tls_reach
from .procs import Proc, ProcGroup, free_port

DOMAIN = "builders.internal"


def sni(machine: FlyBuilder) -> str:
    return f"{machine.id}.{DOMAIN}"


@dataclass
class FlyPlane:
    discoverer: Proc
    envoy: EnvoyProc
    ctx: ssl.SSLContext

    def reach(self, machine: FlyBuilder, *, verify: bool = True) -> str:
        """The name the machine answered with through Envoy, or how it was not routed (NotRouted)."""
        return tls_reach(self.envoy.listener_port, sni(machine), self.ctx if verify else insecure_context())


def start_fly_plane(tmp: Path, procs: ProcGroup, redis_url: str, dns_server, machines: Sequence[FlyBuilder], *,
                    app: str, discoverer_args: Sequence[str] = (), unlisted: Sequence[FlyBuilder] = (),
                    xds_redis_url: str | None = None) -> FlyPlane:
    """Every machine listens on one port and answers its own SNI; DNS lists them all but ``unlisted``
    (machines DNS does not know yet). ``xds_redis_url``: the replica's own (default ``redis_url``)."""
    port = free_port("127.0.0.2")
    certs = tmp / "certs"
    start_backends(procs, certs, {sni(m): (m.ip, port) for m in (*machines, *unlisted)})
    dns_server.set_builders(machines)
    disc = procs.start("discoverer", ["--redis-url", redis_url, "--source", "fly", "--app", app, "--dns-server",
                                      dns_server.addr, "--builder-port", str(port), *discoverer_args])
    ads = free_port()
    procs.start("xds-server", ["--redis-url", xds_redis_url or redis_url, "--listen", f"127.0.0.1:{ads}",
                               "--routing", "sni_cluster"], label="xds")
    envoy = EnvoyProc(tmp / "envoy", node_id="edge-1", ads=f"127.0.0.1:{ads}", routing="sni_cluster")
    procs.procs.append(envoy.start().proc)
    return FlyPlane(disc, envoy, client_context(certs))
