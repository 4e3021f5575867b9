"""Discoverer processes against a real redis-server and the real DNS server.

Two ``discoverer`` processes compete for the lease (ttl 2 s, poll 0.1 s);
the tests kill, pause and stop them, break DNS and restart Redis, and check
what Redis holds afterwards.
"""
from __future__ import annotations

import re
import signal
import time

import orjson
import pytest

from harness.procs import Proc, wait_until
from shared.keys import Keys

KEYS = Keys()
LEASE_TTL = 2.0


def fleet(ids, app: str = "web") -> list[tuple[str, str, str, str]]:
    return [(f"{i:014x}", app, f"fdaa:0:1::{i:x}", "ams") for i in ids]


def sni(i: int) -> str:
    return f"{i:014x}.builders.internal"


class Env:
    """Redis, DNS and the discoverers of one test."""

    def __init__(self, redis_server, dns_server, procs):
        self.redis = redis_server
        self.dns = dns_server
        self.procs = procs
        self.r = redis_server.client()

    def discoverer(self, name: str, *extra: str) -> Proc:
        return self.procs.start("discoverer", [
            "--redis-url", self.redis.url, "--source", "fly", "--app", "web", "--dns-server", self.dns.addr,
            "--dns-timeout", "0.3", "--poll-interval", "0.1", "--lease-ttl", str(LEASE_TTL),
            "--error-backoff", "0.3", "--removal-grace", "0.3", "--id", name, *extra,
        ], label=name)

    def leader(self) -> str | None:
        value = self.r.get(KEYS.leader)
        return value.decode() if value else None

    def epoch(self) -> int:
        return int(self.r.get(KEYS.epoch) or 0)

    def version(self) -> int:
        return int(self.r.get(KEYS.version) or 0)

    def routes(self) -> set[str]:
        return {k.decode() for k in self.r.hkeys(KEYS.routes)}

    def changes(self) -> list[dict]:
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in self.r.xrange(KEYS.changes)]

    def wait_routes(self, ids, timeout: float = 5.0) -> None:
        want = {sni(i) for i in ids}
        wait_until(lambda: self.routes() == want, timeout, what=f"routes == {sorted(want)}")

    def wait_leader(self, name: str, timeout: float = 5.0) -> None:
        wait_until(lambda: self.leader() == name, timeout, what=f"{name} leads")

    def last_poll(self, name: str) -> float:
        raw = self.r.hget(KEYS.discoverers, name)
        return (orjson.loads(raw)["last_poll_at"] or 0.0) if raw else 0.0

    def wait_polls(self, name: str, timeout: float = 5.0) -> None:
        """Until ``name`` has polled twice more: the first poll that ends from now on may have begun
        before (with its write), the second began after it ended (its status entry, every 1 s)."""
        for _ in range(2):
            since = max(self.last_poll(name), time.time())
            wait_until(lambda: self.last_poll(name) > since, timeout, what=f"{name} polled")


@pytest.fixture
def env(redis_server, dns_server, procs):
    dns_server.set_builders(fleet(range(1, 4)))
    e = Env(redis_server, dns_server, procs)
    yield e
    e.r.close()


def a_status(env: Env) -> dict:
    raw = env.r.hget(KEYS.discoverers, "a")
    return orjson.loads(raw) if raw else {}


def start_pair(env: Env, *extra: str) -> tuple[Proc, Proc]:
    a = env.discoverer("a", *extra)
    env.wait_leader("a", 10)
    env.wait_routes(range(1, 4))
    b = env.discoverer("b", *extra)
    b.wait_for_log("the lease is held by another discoverer", 10)  # b has tried, and failed, to take it
    assert env.leader() == "a"
    return a, b


def test_the_leader_writes_the_set_and_routes_say_where_each_sni_goes(env):
    a = env.discoverer("a")
    env.wait_routes(range(1, 4), 10)
    assert env.r.hget(KEYS.routes, sni(1)) == f"[fdaa:0:1::1]:443 {1:014x}".encode()
    record = orjson.loads(env.r.hget(KEYS.builders, f"{1:014x}"))
    assert (record["address"], record["port"], record["sni"], record["app"]) == ("fdaa:0:1::1", 443, sni(1), "web")
    env.wait_polls("a")
    assert len(env.changes()) == 1  # nothing changed since: nothing written
    env.dns.set_builders(fleet([2, 3, 4]))
    env.wait_routes([2, 3, 4])
    added, removed = env.changes()[-2:]  # the addition at once, the removal after its grace
    assert (added["added"], added["removed"]) == (f'["{4:014x}"]', "[]")
    assert (removed["added"], removed["removed"]) == ("[]", f'["{1:014x}"]')
    assert a.alive


def test_kill_9_leader_standby_writes_within_3s(env):
    a, b = start_pair(env)
    a.kill(signal.SIGKILL)
    killed = time.monotonic()
    env.dns.set_builders(fleet([1, 2, 3, 4]))
    env.wait_routes([1, 2, 3, 4], 3.0)
    assert time.monotonic() - killed < 3.0
    assert env.leader() == "b"
    assert env.changes()[-1]["epoch"] == str(env.epoch())


def test_sigstop_leader_is_fenced_after_takeover_and_becomes_standby(env):
    a, b = start_pair(env)
    old_epoch = env.epoch()
    a.kill(signal.SIGSTOP)
    env.wait_leader("b", LEASE_TTL + 2)
    new_epoch = env.epoch()
    assert new_epoch > old_epoch
    env.dns.set_builders(fleet([1, 2, 3, 5]))
    env.wait_routes([1, 2, 3, 5])
    a.kill(signal.SIGCONT)
    env.dns.set_builders(fleet([1, 2, 3, 5, 6]))  # something the old leader would want to write
    env.wait_routes([1, 2, 3, 5, 6])
    a.wait_for_log("leadership lost", 3)
    a.wait_for_log("the lease is held by another discoverer", 3)  # a runs again, as a standby
    epochs = [int(c["epoch"]) for c in env.changes()]
    takeover = epochs.index(new_epoch)
    assert all(e == new_epoch for e in epochs[takeover:]), epochs
    assert env.leader() == "b" and a.alive


def test_sigterm_leader_hands_over_before_its_lease_would_run_out(env):
    a, b = start_pair(env, "--lease-ttl", "60")  # b can lead within the wait only if a released the lease
    a.kill(signal.SIGTERM)
    wait_until(lambda: env.leader() == "b", 10, what="b leads")
    assert a.wait(5) == 0
    assert "lease released" in a.log()
    env.dns.set_builders(fleet([1, 2]))
    env.wait_routes([1, 2])


@pytest.mark.parametrize("fault", ["servfail", "empty", "drop", "stopped"])
def test_dns_failures_keep_the_routes_and_recover(env, fault):
    a = env.discoverer("a")
    env.wait_routes(range(1, 4), 10)
    version = env.version()
    if fault == "stopped":
        env.dns.stop()
    else:
        env.dns.set_mode(fault)
    a.wait_for_log("source failed", 3)
    failed = time.time()
    # a's own status entry, refreshed well past the removal grace, still reports the failure
    wait_until(lambda: a_status(env).get("updated_at", 0) > failed + 1.0 and a_status(env)["last_error"], 5,
               what="a still failing past the removal grace")
    assert env.routes() == {sni(i) for i in range(1, 4)} and env.version() == version
    if fault == "stopped":
        env.dns.start()
    env.dns.set_mode("ok")
    env.dns.set_builders(fleet([1, 2, 3, 7]))
    env.wait_routes([1, 2, 3, 7], 3)
    a.wait_for_log("recovered", 2)
    assert a.log().count("source failed") <= 2  # logged on change, not on every poll


def test_redis_restarted_empty_is_rewritten_with_a_higher_version(env):
    a = env.discoverer("a")
    env.wait_routes(range(1, 4), 10)
    env.dns.set_builders(fleet([1, 2, 3, 4]))
    env.wait_routes([1, 2, 3, 4])
    version = env.version()
    env.redis.restart()
    assert env.routes() == set()
    env.wait_routes([1, 2, 3, 4], 5)
    assert env.version() > version  # readers never see the version go back
    assert env.leader() == "a"
    changes = env.changes()
    assert len(changes) == 1 and len(orjson.loads(changes[0]["added"])) == 4
    assert a.alive


def test_redis_restarted_with_its_data_needs_no_write(env):
    a = env.discoverer("a")
    env.wait_routes(range(1, 4), 10)
    length, version, epoch = len(env.changes()), env.version(), env.epoch()
    env.redis.restart(keep_data=True, down_for=LEASE_TTL + 0.2)  # the lease has expired meanwhile
    wait_until(lambda: env.leader() == "a" and env.epoch() > epoch, 5, what="a leads again")
    a.wait_for_log(f"leadership won: epoch {env.epoch()}", 3)
    env.wait_polls("a")
    assert (len(env.changes()), env.version()) == (length, version)
    assert env.routes() == {sni(i) for i in range(1, 4)}


def test_a_standby_takes_over_a_set_that_only_it_still_sees(env):
    """Failover starts from what Redis holds: an unchanged set is not rewritten."""
    a, b = start_pair(env)
    length = len(env.changes())
    a.kill(signal.SIGKILL)
    env.wait_leader("b", LEASE_TTL + 2)
    b.wait_for_log("leadership won", 2)
    env.wait_polls("b")
    assert len(env.changes()) == length


def test_a_mass_removal_is_held_before_it_is_applied(env):
    env.dns.set_builders(fleet(range(1, 9)))
    a = env.discoverer("a", "--mass-removal-hold", "1.5")
    env.wait_routes(range(1, 9), 10)
    env.dns.set_builders(fleet([1, 2]))  # 6 of 8 gone at once: more likely a broken answer than a fleet
    a.wait_for_log("mass removal held", 3)
    assert len(env.routes()) == 8
    env.wait_routes([1, 2], 5)
    a.wait_for_log("mass removal applied", 1)
    held = float(re.search(r"mass removal applied: .* missing for ([0-9.]+)s", a.log()).group(1))
    assert held >= 1.5  # by the discoverer's own clock: the whole hold


def test_each_discoverer_publishes_its_status_and_removes_it_on_stop(env):
    a, b = start_pair(env)

    def status() -> dict:
        return {k.decode(): orjson.loads(v) for k, v in env.r.hgetall(KEYS.discoverers).items()}

    wait_until(lambda: set(status()) == {"a", "b"} and status()["a"]["builders"] == 3, 3, what="both statuses")
    s = status()
    assert (s["a"]["role"], s["a"]["epoch"], s["a"]["version"]) == ("leader", env.epoch(), env.version())
    assert (s["b"]["role"], s["b"]["epoch"], s["b"]["last_error"]) == ("standby", None, None)
    assert s["a"]["pid"] == a.pid and time.time() - s["a"]["updated_at"] < 2
    a.kill(signal.SIGTERM)
    assert a.wait(5) == 0
    wait_until(lambda: set(status()) == {"b"} and status()["b"]["role"] == "leader", 3, what="b leads in status")
