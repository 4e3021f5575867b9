"""Registration intents with real processes: discoverers, redis-server, the DNS stand-in, xdsctl.

Intents are appended the way a provisioner does (XADD with a plain Redis
client, or ``xdsctl register``); the tests freeze and kill the leader between
the append and the apply, and play DNS confirming, never confirming, lagging
behind a deregistration and disagreeing on an address.
"""
from __future__ import annotations

import signal
import subprocess
import time

import orjson
import pytest

from harness.procs import free_port, scrape, script, wait_until
from shared.keys import Keys

from .test_processes import LEASE_TTL, Env, env, fleet, sni  # noqa: F401 - env is the fixture

KEYS = Keys()
NEW = f"{0xabc:014x}"  # a builder DNS does not list yet
pytestmark = pytest.mark.timeout(60)


def start(env: Env, name: str, *extra: str):
    return env.discoverer(name, "--app", "web", *extra)


def xadd(env: Env, **fields) -> str:
    return env.r.xadd(KEYS.intents, fields).decode()


def outcome(env: Env, request: str, timeout: float = 5.0) -> dict:
    raw = wait_until(lambda: env.r.get(KEYS.outcome(request)), timeout, interval=0.005,
                     what=f"the outcome of {request}")
    return orjson.loads(raw)


def builders(env: Env) -> dict[str, dict]:
    return {k.decode(): orjson.loads(v) for k, v in env.r.hgetall(KEYS.builders).items()}


def xdsctl(env: Env, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([str(script("xdsctl")), "--redis-url", env.redis.url, *args], capture_output=True,
                          text=True, timeout=timeout)


def register_new(env: Env, ip: str = "fdaa:0:1::abc") -> str:
    return xadd(env, op="register", id=NEW, address=ip, region="ams")  # app: the discoverer's one --app


@pytest.mark.parametrize("then", ["killed", "resumed"])
def test_an_intent_appended_while_the_leader_is_frozen_is_applied_once_by_the_next(env, then):
    a = start(env, "a")
    env.wait_leader("a", 10)
    env.wait_routes(range(1, 4), 10)
    start(env, "b").wait_for_log("the lease is held by another discoverer", 10)
    a.kill(signal.SIGSTOP)
    frozen_epoch = env.epoch()
    entry = register_new(env)
    if then == "killed":
        a.kill(signal.SIGKILL)
    env.wait_leader("b", LEASE_TTL + 3)
    out = outcome(env, entry, LEASE_TTL + 3)
    assert out["status"] == "applied" and env.r.hget(KEYS.routes, f"{NEW}.builders.internal")
    if then == "resumed":
        a.kill(signal.SIGCONT)
        a.wait_for_log("leadership lost", 5)
        a.wait_for_log("the lease is held by another discoverer", 5)  # a runs again, as a standby
    env.wait_polls("b")  # b has gone round its loop since: a second apply would be written by now
    assert outcome(env, entry) == out  # applied once: the outcome never changed
    added = [(orjson.loads(c["added"]), int(c["epoch"])) for c in env.changes()]
    assert [e for ids, e in added if ids == [NEW]] == [env.epoch()] and env.epoch() > frozen_epoch, \
        "applied once, by the new leader: the frozen one applied nothing"
    assert env.r.get(KEYS.intents_cursor).decode() == entry


def test_bad_intents_are_rejected_with_a_reason_and_change_nothing(env):
    start(env, "a")
    env.wait_routes(range(1, 4), 10)
    before = (env.version(), env.r.hgetall(KEYS.builders), env.r.hgetall(KEYS.routes))
    cases = {
        "missing_field": {"op": "register", "id": NEW},
        "unknown_op": {"op": "upsert", "id": NEW, "address": "fdaa:0:1::abc"},
        "address_not_allowed": {"op": "register", "id": NEW, "address": "10.0.0.1", "region": "ams"},
        "bad_id": {"op": "register", "id": "a b/c", "address": "fdaa:0:1::abc", "region": "ams"},
        "bad_port": {"op": "register", "id": NEW, "address": "fdaa:0:1::abc", "region": "ams", "port": "70000"},
        "value_too_long": {"op": "register", "id": NEW, "address": "fdaa:0:1::abc", "region": "x" * 5120},
    }
    entries = {reason: xadd(env, **fields) for reason, fields in cases.items()}
    for reason, entry in entries.items():
        out = outcome(env, entry)
        assert (out["status"], out["reason"]) == ("rejected", reason), out
    cli = xdsctl(env, "register", "--id", NEW, "--address", "192.0.2.1", "--region", "ams", "--wait",
                 "--timeout", "5")
    assert cli.returncode == 4 and "address_not_allowed" in cli.stderr, cli
    assert (env.version(), env.r.hgetall(KEYS.builders), env.r.hgetall(KEYS.routes)) == before
    assert env.r.get(KEYS.intents_cursor) is not None


def test_a_registration_is_confirmed_by_dns_and_then_owned_by_it(env):
    start(env, "a", "--confirm-grace", "30")
    env.wait_routes(range(1, 4), 10)
    cli = xdsctl(env, "--json", "register", "--id", NEW, "--address", "fdaa:0:1::abc", "--region", "ams")
    assert cli.returncode == 0 and orjson.loads(cli.stdout)["status"] == "appended", cli
    wait_until(lambda: NEW in builders(env), 5, what="the registered builder routed")
    version = env.version()
    assert builders(env)[NEW]["source"] == "intent"
    shown = orjson.loads(xdsctl(env, "--json", "builders").stdout)
    assert {b["id"]: b["source"] for b in shown["builders"]}[NEW] == "intent"
    env.dns.set_builders(fleet([1, 2, 3, 0xabc]))
    wait_until(lambda: builders(env)[NEW]["source"] == "dns", 5, what="DNS confirms it")
    assert env.version() == version  # a confirmation is bookkeeping: Envoys get no new version
    assert builders(env)[NEW]["registered_at"] > 0
    env.dns.set_builders(fleet([1, 2, 3]))  # DNS owns it now: gone from DNS, gone after the removal grace
    env.wait_routes([1, 2, 3], 3)


def test_a_registration_dns_never_confirms_is_removed_after_the_grace(env):
    a = start(env, "a", "--confirm-grace", "1.5")
    env.wait_routes(range(1, 4), 10)
    entry = register_new(env)
    assert outcome(env, entry)["status"] == "applied"
    applied = time.monotonic()
    env.wait_routes([1, 2, 3, 0xabc], 2)
    env.wait_routes([1, 2, 3], 5)
    assert 1.3 < time.monotonic() - applied < 4.0
    a.wait_for_log("not confirmed by DNS within 2s", 2)


def test_a_deregistered_builder_goes_at_once_and_lagging_dns_does_not_bring_it_back(env):
    start(env, "a", "--confirm-grace", "2")
    env.wait_routes(range(1, 4), 10)
    gone = f"{1:014x}"
    entry = xadd(env, op="deregister", id=gone)
    out = outcome(env, entry)
    assert out["status"] == "applied" and out["region"] == "ams"
    assert env.routes() == {sni(2), sni(3)}  # removed by the write that recorded the outcome
    deregistered = time.monotonic()
    while time.monotonic() - deregistered < 1.5:  # DNS still lists it all along
        assert sni(1) not in env.routes()
        time.sleep(0.05)
    env.wait_routes([1, 2, 3], 3)  # DNS still insists after the grace: it is back


def test_dns_at_another_address_wins_over_a_registration(env):
    port = free_port()
    a = start(env, "a", "--metrics-listen", f"127.0.0.1:{port}")
    env.wait_routes(range(1, 4), 10)
    assert outcome(env, register_new(env, "fdaa:0:1::abc"))["status"] == "applied"
    env.dns.set_builders([*fleet(range(1, 4)), (NEW, "web", "fdaa:0:2::1", "ams")])
    wait_until(lambda: builders(env)[NEW]["address"] == "fdaa:0:2::1", 5, what="DNS's address")
    assert builders(env)[NEW]["source"] == "dns"
    a.wait_for_log("DNS wins", 2)
    again = outcome(env, register_new(env, "fdaa:0:1::abc"))
    assert (again["status"], again["reason"]) == ("rejected", "id_at_other_address")
    # the outcome is written before the counters move (loop._report): wait for them, then compare
    want = {"discoverer_intent_conflicts_total": 2.0, 'discoverer_intents_total{op="register",status="rejected"}': 1.0}
    wait_until(lambda: {k: scrape(port).get(k) for k in want} == want, 5, what=f"metrics {want}")
