"""xdsctl against a real redis-server: what operators read, in both output forms."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from discoverer import status as discoverer_status
from harness.procs import free_port, script
from harness.writer import acquire
from shared.model import Builder
from xdsctl.main import main, parser

LONG_SNI = "a-builder-with-a-long-name-0001.in-a-region-far-away.builders-of-a-large-organisation.internal"


def xdsctl(*args: str) -> subprocess.CompletedProcess:
    """The real command, its stdout a pipe (not a terminal)."""
    return subprocess.run([str(script("xdsctl")), *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def builder(n: int, sni: str | None = None) -> Builder:
    return Builder(f"b{n:02d}", "app", "ord", f"127.0.0.{n + 1}", 443, sni or f"b{n:02d}.builders.internal", 1.0)


async def write(store, *builders: Builder) -> int:
    lease = await acquire(store, "tests", 60_000)
    return await store.apply(lease, lease.version, builders, [])


@pytest.mark.parametrize("argv", [
    ["--json", "--redis-url", "redis://h:1/0", "--prefix", "{p}", "routes"],
    ["routes", "--json", "--redis-url", "redis://h:1/0", "--prefix", "{p}"],
    ["--json", "routes", "--redis-url", "redis://h:1/0", "--prefix", "{p}"],
])
def test_global_options_go_before_or_after_the_subcommand(argv):
    args = parser().parse_args(argv)
    assert (args.command, args.json, args.redis_url, args.prefix) == ("routes", True, "redis://h:1/0", "{p}")


def test_a_global_option_before_the_subcommand_is_not_reset_by_it():
    args = parser().parse_args(["--prefix", "{a}", "--json", "status"])
    assert args.prefix == "{a}" and args.json is True
    args = parser().parse_args(["--prefix", "{a}", "changes", "--prefix", "{b}", "--count", "3"])
    assert args.prefix == "{b}" and args.json is False and args.count == 3


@pytest.mark.parametrize("given, words", [
    (["--xds-cert", "C", "--xds-key", "K"], "--xds-cert: needs --xds-ca"),
    (["--xds-cert", "C", "--xds-ca", "A"], "--xds-cert: needs --xds-key"),
    (["--xds-key", "K"], "--xds-key: needs --xds-cert"),
    (["--xds-sni", "xds.internal"], "--xds-sni: needs --xds-ca"),
])
def test_bootstrap_refuses_half_given_tls(tmp_path, capsys, given, words):
    for name in "CKA":
        (tmp_path / name).write_text("pem")
    argv = [str(tmp_path / a) if a in "CKA" else a for a in given]
    assert main(["bootstrap", "--node-id", "e", *argv]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith(f"error: {words}") and len(out.err.splitlines()) == 1


def test_bootstrap_with_the_whole_tls_set_uses_it(tmp_path):
    for name in "CKA":
        (tmp_path / name).write_text("pem")
    out = xdsctl("bootstrap", "--node-id", "e", "--xds-ca", str(tmp_path / "A"), "--xds-cert", str(tmp_path / "C"),
                 "--xds-key", str(tmp_path / "K"))
    assert out.returncode == 0, out.stderr
    assert "transportSocket" in out.stdout and str(tmp_path / "K") in out.stdout


@pytest.mark.parametrize("argv", [["routes"], ["changes"], ["discoverers"], ["status"], ["envoys"],
                                  ["changes", "--follow"]])
def test_a_dead_redis_is_one_error_line_not_a_traceback(argv):
    out = xdsctl("--redis-url", f"redis://127.0.0.1:{free_port()}/0", *argv)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: cannot reach Redis") and len(out.stderr.splitlines()) == 1


async def test_changes_show_wall_clock_times_and_json_keeps_the_id(store, redis_server):
    before = time.time()
    await write(store, builder(1), builder(2))
    human = xdsctl("--redis-url", redis_server.url, "changes").stdout.strip()
    entry = json.loads(xdsctl("--redis-url", redis_server.url, "changes", "--json").stdout)["changes"][0]
    assert entry["id"] not in human
    assert human.startswith(time.strftime("%Y-%m-%d", time.localtime(entry["at"]))) and " v1 " in human
    assert entry["at"] == int(entry["id"].split("-")[0]) / 1000 and before - 1 < entry["at"] < time.time() + 1
    assert (entry["version"], entry["added"]) == (1, ["b01", "b02"])


async def test_piped_tables_keep_every_sni_whole(store, redis_server):
    await write(store, builder(1, LONG_SNI), builder(2))
    lines = xdsctl("--redis-url", redis_server.url, "builders").stdout.splitlines()
    assert lines[0].split("\t") == ["id", "app", "region", "address", "port", "sni", "source"]
    assert lines[1].split("\t") == ["b01", "app", "ord", "127.0.0.2", "443", LONG_SNI, "dns"]
    routes = xdsctl("--redis-url", redis_server.url, "routes").stdout.splitlines()
    assert f"{LONG_SNI}\t127.0.0.2:443" in routes


async def test_versions_are_numbers_in_json(store, redis_server):
    await write(store, builder(1))
    now = time.time()
    await store.put_status(store.keys.envoys, {"edge-1": {
        "replica": "r1", "region": "ord", "acked": {"cds": "1", "lds": "1-bridge"},
        "last_nack": {"type": "cds", "version": "1", "detail": "bad"}, "heartbeat": now}})
    await store.put_status(store.keys.replicas, {"r1": {"version": 1, "heartbeat": now, "streams": 1}})
    envoy = json.loads(xdsctl("--redis-url", redis_server.url, "--json", "envoys").stdout)["envoys"]["edge-1"]
    assert envoy["acked"] == {"cds": 1, "lds": 1} and envoy["labels"] == {"lds": "bridge"}
    assert envoy["last_nack"]["version"] == 1 and envoy["state"] == "nacking"
    replicas = json.loads(xdsctl("--redis-url", redis_server.url, "--json", "replicas").stdout)
    assert replicas["replicas"]["r1"]["version"] == 1 and replicas["version"] == 1
    assert "lds=1-bridge" in xdsctl("--redis-url", redis_server.url, "envoys").stdout


async def test_discoverers_shows_the_live_ones_and_the_discoverer_prunes_the_dead(store, redis_server):
    now = time.time()
    await store.put_status(store.keys.discoverers, {
        "d1": {"role": "leader", "epoch": 3, "version": 7, "builders": 2, "last_poll_at": now - 0.2,
               "last_error": None, "updated_at": now},
        "d2": {"role": "standby", "epoch": None, "version": None, "builders": None, "last_poll_at": now - 1,
               "last_error": "DNS timeout", "updated_at": now - 0.5},
        "dead": {"role": "leader", "epoch": 2, "updated_at": now - 60}})
    shown = json.loads(xdsctl("--redis-url", redis_server.url, "discoverers", "--json").stdout)["discoverers"]
    assert set(shown) == {"d1", "d2"}, "an entry older than STALE_AFTER is hidden"
    assert shown["d1"]["epoch"] == 3 and 0 <= shown["d1"]["age"] < 5 and shown["d1"]["last_poll_age"] >= 0.2
    table = xdsctl("--redis-url", redis_server.url, "discoverers").stdout.splitlines()
    assert table[0].split("\t") == ["holder", "role", "epoch", "version", "builders", "last poll", "last error", "age"]
    assert table[2].split("\t")[:2] == ["d2", "standby"] and "DNS timeout" in table[2]
    status = xdsctl("--redis-url", redis_server.url, "status").stdout
    assert "discoverers 2: d1 leader, d2 standby (last error: DNS timeout)" in status
    assert set(json.loads(xdsctl("--redis-url", redis_server.url, "--json", "status").stdout)["discoverers"]) \
        == {"d1", "d2"}
    assert await discoverer_status.prune(store) == ["dead"]
    assert set(await store.get_status(store.keys.discoverers)) == {"d1", "d2"}
