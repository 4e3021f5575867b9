"""``xdsctl explain`` against a live plane: redis-server, the DNS stand-in, a fly-source discoverer,
an xds-server that poisons one builder (its Envoy NACKs it), a real Envoy and TLS builders."""
from __future__ import annotations

import json
import subprocess

import pytest

from harness.dns import DnsProcess
from harness.envoy import EnvoyProc, start_backends, tls_reach
from harness.procs import ProcGroup, free_port, script, wait_until
from harness.redis import start_redis
from harness.redis_ha import HAVE_REDIS7, SKIP_REASON, Node
from tools.flyzone import FlyBuilder
from tools.tls_backend import client_context

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
DOMAIN = "builders.internal"
GOOD = FlyBuilder("a0000000000001", "builder", "127.0.0.2", "ord")
DEREG = FlyBuilder("b0000000000002", "builder", "127.0.0.3", "ord")
OUTSIDE = FlyBuilder("c0000000000003", "builder", "8.8.8.8", "ord")  # outside the allow-list
OTHER = FlyBuilder("f0000000000006", "otherapp", "127.0.0.6", "ord")  # a machine of another app
POISON = FlyBuilder("d0000000000004", "builder", "127.0.0.5", "ord")  # the xds-server makes Envoy NACK it
UNLISTED = "e0000000000005"


def sni(bid: str) -> str:
    return f"{bid}.{DOMAIN}"


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explain")
    procs = ProcGroup(tmp / "logs")
    redis = start_redis(tmp / "redis")
    dns = DnsProcess(tmp / "dns")
    try:
        dns.start()
        yield _start(tmp, procs, redis.url, dns)
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.stop_all()
        dns.stop()
        redis.stop()


def _start(tmp, procs: ProcGroup, url: str, dns: DnsProcess) -> dict:
    port = free_port("127.0.0.2")
    certs = tmp / "certs"
    start_backends(procs, certs, {sni(m.id): (m.ip, port) for m in (GOOD, DEREG, POISON)})
    dns.set_builders([GOOD, DEREG, OUTSIDE, OTHER])
    procs.start("discoverer", ["--redis-url", url, "--source", "fly", "--app", "builder", "--dns-server", dns.addr,
                               "--builder-port", str(port), "--id", "d1"])
    ads = free_port()
    procs.start("xds-server", ["--redis-url", url, "--listen", f"127.0.0.1:{ads}", "--replica-id", "xds-1",
                               "--poison", POISON.id], label="xds")
    envoy = EnvoyProc(tmp / "envoy", node_id="edge-1", ads=f"127.0.0.1:{ads}", region="ord")
    procs.procs.append(envoy.start().proc)
    ctx = client_context(certs)
    wait_until(lambda: tls_reach(envoy.listener_port, sni(GOOD.id), ctx), 20, what="the good builder routed")
    return {"url": url, "envoy": envoy, "dns": dns, "ctx": ctx}


def explain(plane, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(script("xdsctl")), "--redis-url", plane["url"], "explain", *args],
                          capture_output=True, text=True, timeout=30)


def traced(plane, *args: str) -> tuple[int, dict]:
    done = explain(plane, *args, "--json")
    assert not done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def stage(trace: dict, n: int) -> dict:
    return trace["stages"][n - 1]


def test_a_builder_that_routes(plane):
    code, trace = wait_until(lambda: (r := traced(plane, GOOD.id))[0] == 0 and r, 10, what="explain says it routes")
    assert trace["routes"] and [s["ok"] for s in trace["stages"]] == [True] * 5
    assert "DNS lists it: app builder, region ord, 127.0.0.2" in stage(trace, 1)["says"]
    assert stage(trace, 3)["data"]["since"] >= 1 and "edge-1" in stage(trace, 5)["says"]
    human = explain(plane, sni(GOOD.id), "--probe", f"127.0.0.1:{plane['envoy'].listener_port}")
    assert human.returncode == 0, human.stdout + human.stderr
    assert "6 probe      ok   routed through" in human.stdout and "ServerHello" in human.stdout
    assert human.stdout.rstrip().endswith("routes")


def test_an_address_outside_the_allow_list_fails_validation(plane):
    code, trace = wait_until(lambda: (r := traced(plane, OUTSIDE.id))[0] != 1 and r, 10,
                             what="the rejection recorded")
    assert code == 2 and stage(trace, 1)["ok"] and "DNS lists it" in stage(trace, 1)["says"]
    assert stage(trace, 2)["data"]["reason"] == "address_not_allowed" and "8.8.8.8" in stage(trace, 2)["says"]
    assert "--allow-cidr" in stage(trace, 2)["fix"]


def test_a_machine_of_another_app_fails_validation(plane):
    code, trace = wait_until(lambda: (r := traced(plane, OTHER.id))[0] != 1 and r, 10, what="recorded")
    assert code == 2 and stage(trace, 2)["data"]["reason"] == "other_app"
    assert "otherapp" in stage(trace, 2)["says"] and "--app" in stage(trace, 2)["fix"]


def test_a_builder_no_source_lists_fails_at_the_source(plane):
    code, trace = traced(plane, UNLISTED)
    assert code == 1 and "no source lists it" in stage(trace, 1)["says"]
    assert [s["ok"] for s in trace["stages"][1:]] == [None] * 4
    probed = explain(plane, sni(UNLISTED), "--probe", f"127.0.0.1:{plane['envoy'].listener_port}")
    assert probed.returncode == 1 and "6 probe      FAIL refused at" in probed.stdout, probed.stdout
    assert "does not route: stage 1 (source)" in probed.stdout


def test_a_deregistered_builder_is_held_off(plane):
    assert traced(plane, DEREG.id)[0] == 0 or wait_until(lambda: traced(plane, DEREG.id)[0] == 0, 10)
    dereg = subprocess.run([str(script("xdsctl")), "--redis-url", plane["url"], "deregister", "--id", DEREG.id,
                            "--wait"], capture_output=True, text=True, timeout=30)
    assert dereg.returncode == 0, dereg.stdout + dereg.stderr
    code, trace = traced(plane, DEREG.id)
    assert code == 1 and "deregistered (entry " in stage(trace, 1)["says"], trace
    assert "xdsctl register" in stage(trace, 1)["fix"]


def test_an_envoy_that_nacks_fails_stage_5(plane):
    plane["dns"].set_builders([GOOD, DEREG, OUTSIDE, OTHER, POISON])
    code, trace = wait_until(lambda: (r := traced(plane, POISON.id))[0] == 5 and r, 15, what="the NACK seen")
    nacked = stage(trace, 5)["data"]["nacked"]
    assert list(nacked) == ["ord"] and nacked["ord"][0].startswith("edge-1 (cds v"), nacked
    assert tls_reach(plane["envoy"].listener_port, sni(GOOD.id), plane["ctx"]), "the NACKing Envoy keeps routing"
    human = explain(plane, POISON.id)
    assert human.returncode == 5 and "5 envoys     FAIL nacked [ord: edge-1 (cds v" in human.stdout, human.stdout
    assert len(human.stdout.splitlines()) == 8, "the NACK's error on one line"


def test_a_rejected_registration_is_explained(plane):
    bid = "a1000000000009"
    reg = subprocess.run([str(script("xdsctl")), "--redis-url", plane["url"], "register", "--id", bid, "--address",
                          "9.9.9.9", "--app", "builder", "--region", "ord", "--wait"], capture_output=True, text=True,
                         timeout=30)
    assert reg.returncode == 4, reg.stdout + reg.stderr
    code, trace = wait_until(lambda: (r := traced(plane, bid))[0] != 1 and r, 10, what="the rejection recorded")
    assert code == 2 and "intent" in stage(trace, 1)["says"] and stage(trace, 2)["data"]["source"] == "intent"
    assert stage(trace, 2)["data"]["reason"] == "address_not_allowed"


@pytest.mark.skipif(not HAVE_REDIS7, reason=SKIP_REASON)
def test_read_only_against_a_redis_replica(plane, tmp_path):
    primary = plane["url"].split("//")[1].split("/")[0].split(":")
    replica = Node(tmp_path, "replica", ["--replicaof", primary[0], primary[1]]).start()
    try:
        url = f"redis://{replica.addr}/0"
        code, trace = wait_until(lambda: (r := traced({**plane, "url": url}, GOOD.id))[0] == 0 and r, 15,
                                 what="explain on the replica says it routes")
        assert replica.info()["role"] == "slave" and trace["routes"]
    finally:
        replica.stop()


@pytest.mark.parametrize("bad", ["a\x01b", b"id\xff\xfe", "x" * 5000, "\x1b[31mred", "caf\u00e9.builders.internal", "a..b", "-"])
def test_hostile_input_is_one_line_and_exit_2(bad, tmp_path):
    done = subprocess.run([str(script("xdsctl")), "--redis-url", f"redis://127.0.0.1:{free_port()}/0", "explain",
                           bad], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.startswith("error: ID|SNI: wants a builder id or SNI")
    assert len(done.stderr.splitlines()) == 1 and len(done.stderr) < 300 and "\x1b" not in done.stderr
