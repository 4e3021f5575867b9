"""Discoverer (and xds-server) processes that must stay up: garbage DNS answers, new apps, a Redis that
cannot be reached or holds a key of the wrong type. Real redis-server, real DNS server, real processes."""
from __future__ import annotations

import time

import pytest

from harness.metrics import sample
from harness.procs import free_port, wait_until
from shared.keys import Keys

pytestmark = [pytest.mark.timeout(90)]
KEYS = Keys()


def machines(n: int, app: str, base: int = 0, region: str = "ord") -> list[tuple[str, str, str, str]]:
    return [(f"{base + i:014x}", app, f"fdaa:0:1::{base + i + 1:x}", region) for i in range(n)]


def routes(redis_server) -> set[str]:
    with redis_server.client() as c:
        return {k.decode() for k in c.hkeys(KEYS.routes)}


def sni(bid: str) -> str:
    return f"{bid}.builders.internal"


def discoverer(procs, redis_url: str, dns_addr: str, *extra: str, name: str = "d1"):
    metrics = free_port()
    proc = procs.start("discoverer", [
        "--redis-url", redis_url, "--source", "fly", "--dns-server", dns_addr, "--dns-timeout", "0.3",
        "--poll-interval", "0.1", "--error-backoff", "0.3", "--removal-grace", "0.3", "--id", name,
        "--metrics-listen", f"127.0.0.1:{metrics}", *extra], label=name)
    return proc, metrics


def test_a_malformed_per_app_record_is_counted_and_the_good_machine_routes(redis_server, dns_server, procs):
    """The crash of the issue: 'cannot unpack non-iterable RecordError object' ended every discoverer."""
    dns_server.set_builders([], extra={"vms.builders.internal": {"TXT": ["0000000000a001 ord,garbage"]},
                                       "0000000000a001.vm.builders.internal": {"AAAA": ["fdaa:0:1::a1"]}})
    proc, metrics = discoverer(procs, redis_server.url, dns_server.addr, "--per-app", "--app", "builders")
    wait_until(lambda: routes(redis_server) == {sni("0000000000a001")}, 10, what="the good machine routed")
    polls = sample(metrics, "discoverer_polls_total", result="unchanged")
    wait_until(lambda: sample(metrics, "discoverer_polls_total", result="unchanged") > polls + 5, 5,
               what="still polling")
    assert sample(metrics, "discoverer_records_rejected_total", reason="bad_vms_record") >= 1
    assert sample(metrics, "discoverer_loop_crashes_total", loop="poll") == 0
    assert proc.alive and "Traceback" not in proc.log()
    assert proc.log().count("record skipped") == 1, "logged once per distinct problem"


@pytest.mark.parametrize("mode", ["explicit", "automatic"])
def test_an_app_created_after_start_is_polled_without_a_restart(redis_server, dns_server, procs, mode):
    # automatic: 600 machines of another app make the org-wide answer too big for one poll
    others = machines(600, "web", base=1000) if mode == "automatic" else []
    dns_server.set_builders(machines(2, "bk-ord") + others)
    flags = ["--per-app"] if mode == "explicit" else []
    proc, _ = discoverer(procs, redis_server.url, dns_server.addr, "--app", "bk-.*", "--apps-refresh", "1", *flags)
    first = {sni(b[0]) for b in machines(2, "bk-ord")}
    wait_until(lambda: routes(redis_server) == first, 15, what="bk-ord routed")
    if mode == "automatic":
        assert "switching to per-app queries" in proc.log()
    created = machines(1, "bk-ams", base=50, region="ams")
    dns_server.set_builders(machines(2, "bk-ord") + created + others)
    started = time.monotonic()
    wait_until(lambda: routes(redis_server) == first | {sni(created[0][0])}, 8, what="bk-ams routed")
    assert time.monotonic() - started < 6, "within a few seconds of the app's creation"
    assert proc.alive and "app(s) bk-ams in _apps.internal: polling them" in proc.log()


def test_an_unreachable_redis_is_said_at_once_and_again_and_shows_in_the_metrics(dns_server, procs):
    port = free_port()  # nothing listens there
    dns_server.set_builders(machines(1, "bk-ord"))
    started = time.monotonic()
    proc, metrics = discoverer(procs, f"redis://127.0.0.1:{port}/0", dns_server.addr, "--app", "bk-ord")
    line = f"cannot reach Redis at redis://127.0.0.1:{port}/0"
    proc.wait_for_log(line, 5)
    assert time.monotonic() - started < 4, "at once (the process needs ~1 s to start)"
    assert "retrying every 0.1s as a standby" in proc.log()
    assert sample(metrics, "discoverer_redis_up") == 0
    wait_until(lambda: proc.log().count(line) >= 2, 9, what="said again a few seconds later")
    assert proc.log().count(line) <= 3, "every few seconds, not every 100 ms"
    stopping = time.monotonic()
    assert proc.stop(5) == 0 and time.monotonic() - stopping < 2.5, "a quick exit on SIGTERM"


def test_a_key_of_the_wrong_type_is_an_operator_error_both_services_survive(tmp_path, redis_server, dns_server,
                                                                            procs):
    dns_server.set_builders(machines(2, "bk-ord"))
    disc, d_metrics = discoverer(procs, redis_server.url, dns_server.addr, "--app", "bk-ord")
    x_metrics, ads = free_port(), free_port()
    xds = procs.start("xds-server", ["--redis-url", redis_server.url, "--listen", f"127.0.0.1:{ads}",
                                     "--metrics-listen", f"127.0.0.1:{x_metrics}", "--replica-id", "x1"], label="x1")
    wait_until(lambda: len(routes(redis_server)) == 2, 10, what="the set written")
    wait_until(lambda: sample(x_metrics, "xds_version") >= 1, 10, what="the replica loaded it")
    served = sample(x_metrics, "xds_version")
    with redis_server.client() as c:
        c.delete(KEYS.changes)
        c.set(KEYS.changes, "not a stream")  # by hand, or another program sharing the prefix
    dns_server.set_builders(machines(3, "bk-ord"))  # something to write
    for port, name in ((d_metrics, "discoverer"), (x_metrics, "xds")):
        wait_until(lambda: sample(port, f"{name}_redis_operator_errors_total", code="WRONGTYPE") >= 2, 10,
                   what=f"{name} counts the refusal")
    for proc in (disc, xds):
        proc.wait_for_log(f"{KEYS.changes} holds a string, not the stream flyxds keeps there", 5)
        assert f"redis-cli DEL '{KEYS.changes}'" in proc.log() and proc.alive
        lines = [line for line in proc.log().splitlines() if f"{KEYS.changes} holds a string" in line]
        assert len(lines) == 1 and " ERROR " in lines[0], "an error, once per cause, not at every retry"
    assert sample(x_metrics, "xds_version") == served, "the replica keeps serving what it had"
    assert len(routes(redis_server)) == 2, "nothing half-written"
    with redis_server.client() as c:
        c.delete(KEYS.changes)  # what the log line says to do
    wait_until(lambda: len(routes(redis_server)) == 3, 10, what="the discoverer writes again")
    wait_until(lambda: sample(x_metrics, "xds_version") > served, 10, what="the replica follows again")
    assert disc.alive and xds.alive
