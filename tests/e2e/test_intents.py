"""Registration intents end to end: real discoverer, xds-server, Envoy 1.40 and TLS builders.

1 ``xdsctl register --wait`` with two Envoys in two regions under
  ``--region-scope local``: it waits for the Envoy of the builder's region only,
  the first connection after it succeeds, and a frozen Envoy makes it time out
  (exit 3) naming that Envoy;
2 a builder that starts listening 700 ms after its route is live still gets
  its first connection, in every routing mode (tcp_proxy connect attempts);
  with ``--connect-attempts 1`` it does not;
3 on_demand: a connection opened right after the intent is appended is served.
"""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from harness.envoy import REFUSED, EnvoyProc, start_backends, tls_reach
from harness.procs import ProcGroup, free_port, script, wait_until
from harness.redis import start_redis
from tools.tls_backend import client_context, start_tls_backend

from .fleet import DOMAIN

MODES = ("filter_chains", "sni_cluster", "on_demand")
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
N_BACKENDS = 8


def sni(bid: str) -> str:
    return f"{bid}.{DOMAIN}"


class Stack:
    """redis-server, a file-source discoverer (the file stays empty: intents only), one xds-server,
    TLS stand-ins on 127.0.6.1..8 (already listening) and Envoys on demand."""

    def __init__(self, directory: Path, mode: str, *, scope: str = "all", xds_args: tuple[str, ...] = ()):
        self.dir, self.mode = Path(directory), mode
        self.procs = ProcGroup(self.dir / "logs")
        self.redis = start_redis(self.dir / "redis")
        self.certs = self.dir / "certs"
        self.ctx = client_context(self.certs)
        self.port = free_port("127.0.6.1")
        self.backends = {f"c{n:013x}": f"127.0.6.{n + 1}" for n in range(N_BACKENDS)}
        start_backends(self.procs, self.certs, {sni(b): (ip, self.port) for b, ip in self.backends.items()})
        file = self.dir / "builders.json"
        file.write_text(json.dumps([]))
        common = ["--redis-url", self.redis.url]
        self.procs.start("discoverer", [*common, "--source", "file", "--file", str(file), "--app", "builder",
                                        "--poll-interval", "0.1", "--id", "d1"])
        self.ads = f"127.0.0.1:{free_port()}"
        self.procs.start("xds-server", [*common, "--listen", self.ads, "--routing", mode, "--region-scope", scope,
                                        "--replica-id", f"xds-{mode}-{scope}", *xds_args])
        self.envoys: dict[str, EnvoyProc] = {}
        self._n = 0

    def envoy(self, node_id: str, region: str) -> EnvoyProc:
        envoy = EnvoyProc(self.dir / "envoys", node_id=node_id, ads=self.ads, region=region, routing=self.mode,
                          delta=self.mode == "on_demand")
        envoy.start()
        self.procs.procs.append(envoy.proc)
        self.envoys[node_id] = envoy
        wait_until(lambda: self.envoy_entry(node_id), 10, what=f"{node_id} in {{xds}}:envoys")
        return envoy

    def envoy_entry(self, node_id: str) -> dict | None:
        raw = self.redis.client().hget("{xds}:envoys", node_id)
        return orjson.loads(raw) if raw else None

    def xdsctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([str(script("xdsctl")), "--redis-url", self.redis.url, "--json", *args],
                              capture_output=True, text=True, timeout=timeout)

    def register(self, bid: str, ip: str, region: str, *more: str) -> subprocess.CompletedProcess:
        return self.xdsctl("register", "--id", bid, "--address", ip, "--app", "builder", "--region", region,
                           "--port", str(self.port), *more)

    def close(self) -> None:
        self.procs.stop_all()
        self.redis.stop()


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    made: dict[tuple, Stack] = {}

    def get(mode: str, scope: str = "all", xds_args: tuple[str, ...] = ()) -> Stack:
        key = (mode, scope, xds_args)
        if key not in made:
            made[key] = Stack(tmp_path_factory.mktemp(f"{mode}-{scope}"), mode, scope=scope, xds_args=xds_args)
        return made[key]

    try:
        yield get
    finally:
        for stack in made.values():
            stack.close()


def test_wait_covers_the_envoys_of_the_builders_region_and_names_those_that_do_not_ack(stacks):
    stack = stacks("sni_cluster", "local")
    ord_, ams = stack.envoy("edge-ord", "ord"), stack.envoy("edge-ams", "ams")
    (b_ord, ip_ord), (b_ams, ip_ams), (b_late, ip_late) = list(stack.backends.items())[:3]
    done = stack.register(b_ord, ip_ord, "ord", "--wait", "--timeout", "10")
    assert done.returncode == 0, done
    first = tls_reach(ord_.listener_port, sni(b_ord), stack.ctx, timeout=5)  # the first connection, at once
    result = orjson.loads(done.stdout)
    assert first == sni(b_ord) and result["envoys"] == ["edge-ord"] and result["waiting"] == []
    assert result["status"] == "applied" and result["version"] >= 1 and result["wait_ms"] > 0
    assert tls_reach(ams.listener_port, sni(b_ord), stack.ctx, timeout=2) is REFUSED  # not in ams's view
    ord_.proc.kill(signal.SIGSTOP)  # connected, live, but answering nothing
    try:
        stuck = stack.register(b_late, ip_late, "ord", "--wait", "--timeout", "2")
        other = stack.register(b_ams, ip_ams, "ams", "--wait", "--timeout", "10")
    finally:
        ord_.proc.kill(signal.SIGCONT)
    assert stuck.returncode == 3 and "edge-ord" in stuck.stderr and "edge-ams" not in stuck.stderr, stuck
    assert [w["node"] for w in orjson.loads(stuck.stdout)["waiting"]] == ["edge-ord"]
    assert other.returncode == 0 and orjson.loads(other.stdout)["envoys"] == ["edge-ams"], other
    gone = stack.xdsctl("deregister", "--id", b_ord, "--wait", "--timeout", "10")
    assert gone.returncode == 0 and orjson.loads(gone.stdout)["envoys"] == ["edge-ord"], gone
    assert tls_reach(ord_.listener_port, sni(b_ord), stack.ctx, timeout=2) is REFUSED


@pytest.mark.parametrize("mode, attempts", [(m, None) for m in MODES] + [("sni_cluster", "1")])
async def test_a_builder_that_listens_700_ms_after_its_route_is_live_gets_its_first_connection(stacks, mode,
                                                                                               attempts):
    stack = stacks(mode, "all", ("--connect-attempts", attempts) if attempts else ())
    envoy = stack.envoys.get("edge") or stack.envoy("edge", "ord")
    stack._n += 1
    bid, ip = f"d{stack._n:013x}", f"127.0.7.{stack._n}"
    live = await asyncio.to_thread(stack.register, bid, ip, "ord", "--wait", "--timeout", "10")
    assert live.returncode == 0, live
    t0 = time.monotonic()
    client = asyncio.create_task(asyncio.to_thread(tls_reach, envoy.listener_port, sni(bid), stack.ctx,
                                                   timeout=8))
    await asyncio.sleep(0.7)
    backend = await start_tls_backend(ip, stack.port, sni(bid), stack.certs)  # BuildKit is up at last
    try:
        reached = await client
    finally:
        await backend.close()
    if attempts == "1":
        assert reached is REFUSED  # the control: without connect attempts the first connection fails
    else:
        assert reached == sni(bid) and time.monotonic() - t0 >= 0.7


def test_on_demand_a_connection_right_after_the_append_is_served(stacks):
    stack = stacks("on_demand", "all")
    envoy = stack.envoys.get("edge") or stack.envoy("edge", "ord")
    r = stack.redis.client()
    served = []
    for bid, ip in list(stack.backends.items())[3:8]:
        r.xadd("{xds}:intents", {"op": "register", "id": bid, "address": ip, "app": "builder", "region": "ord",
                                 "port": str(stack.port)})
        served.append(tls_reach(envoy.listener_port, sni(bid), stack.ctx, timeout=5))  # no wait at all
    assert served == [sni(b) for b in list(stack.backends)[3:8]]
