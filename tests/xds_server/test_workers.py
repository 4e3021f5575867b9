"""``xds-server --workers N`` and the port check, with real processes (and a real Envoy where it matters).

Streams spread across the workers of one port; a killed worker's Envoy is
served by another without dropping a TLS connection through it, and the
supervisor starts the worker again; SIGTERM stops them all; an unrelated
second replica on the port exits 2; a replica restarted in place starts at
once despite connections in TIME_WAIT.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc
import orjson
import pytest

from harness.envoy import EnvoyProc, start_backends
from harness.procs import Proc, async_wait_until, free_port, script, wait_until
from shared.keys import Keys
from tools.tls_backend import client_context

from .harness import builder
from .test_delta import dsync
from .xds_client import CDS, LDS, XdsClient

pytestmark = [pytest.mark.timeout(120)]
KEYS = Keys()
BUILDER = "a0000000000001"
SNI = f"{BUILDER}.builders.internal"


def replicas(redis_server, fresh: float = 5.0) -> dict[str, dict]:
    """{xds}:replicas entries with a heartbeat in the last ``fresh`` seconds."""
    raw = redis_server.client().hgetall(KEYS.replicas)
    entries = {k.decode(): orjson.loads(v) for k, v in raw.items()}
    return {k: v for k, v in entries.items() if time.time() - v.get("heartbeat", 0) < fresh}


def workers_ready(redis_server, group_of, count: int, version: int | None = None) -> dict[str, dict]:
    found = {k: v for k, v in replicas(redis_server).items() if v.get("workers") == group_of and v.get("ready")
             and (version is None or v.get("version") == version)}
    return found if len(found) == count else {}


def start(procs, redis_server, port: int, *args, label: str = "xds") -> Proc:
    return procs.start("xds-server", ["--redis-url", redis_server.url, "--listen", f"127.0.0.1:{port}",
                                      "--routing", "sni_cluster", *args], label=label)


def group_of(proc) -> str:
    return f"{socket.gethostname()}:{proc.pid}"


def pid_of(replica_id: str) -> int:
    return int(replica_id.rsplit(":", 1)[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_streams_spread_across_workers(writer, redis_server, procs):
    version = await writer.put(builder("a"))
    port = free_port()
    sup = start(procs, redis_server, port, "--workers", "2")

    async def ready():
        return workers_ready(redis_server, group_of(sup), 2, version)
    await async_wait_until(ready, 20, what="two workers ready")
    clients = [XdsClient(f"127.0.0.1:{port}", f"envoy-{i}", "ord", channel=grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])) for i in range(20)]  # 20 connections
    try:
        for client in clients:
            await dsync(await client.delta(), CDS, LDS)

        async def spread():
            counts = [v["streams"] for v in workers_ready(redis_server, group_of(sup), 2).values()]
            return counts if sum(counts) == 20 else None
        counts = await async_wait_until(spread, 10, what="20 streams in the workers' status")
        assert min(counts) > 0, f"every stream on one worker: {counts}"
    finally:
        for client in clients:
            await client.close()


def test_a_killed_workers_envoy_moves_to_another_without_dropping_tls(tmp_path, redis_server, procs):
    certs, builders = tmp_path / "certs", tmp_path / "builders.json"
    backend_port = free_port("127.0.0.2")
    start_backends(procs, certs, {SNI: ("127.0.0.2", backend_port)})
    write_builders(builders, [(BUILDER, "127.0.0.2", backend_port)])
    procs.start("discoverer", ["--redis-url", redis_server.url, "--source", "file", "--file", str(builders),
                               "--poll-interval", "0.05"])
    port = free_port()
    sup = start(procs, redis_server, port, "--workers", "2")
    wait_until(lambda: workers_ready(redis_server, group_of(sup), 2, 1), 20, what="two workers at version 1")
    envoy = EnvoyProc(tmp_path / "envoy", node_id="edge-1", ads=f"127.0.0.1:{port}", routing="sni_cluster",
                      delta=True)
    procs.procs.append(envoy.start().proc)

    conn = open_tls(envoy.listener_port, client_context(certs))
    served_by = wait_until(lambda: envoy_replica(redis_server, "edge-1"), 15, what="Envoy's stream in status")
    os.kill(pid_of(served_by), signal.SIGKILL)

    moved = wait_until(lambda: (r := envoy_replica(redis_server, "edge-1")) != served_by and r, 20,
                       what="Envoy served by another worker")
    assert moved in replicas(redis_server), "Envoy reconnected to a live worker of the same port"
    conn.sendall(b"still here\n")
    assert conn.makefile("rb").readline() == b"still here\n", "the TLS connection through Envoy dropped"
    new = wait_until(lambda: served_by not in (w := workers_ready(redis_server, group_of(sup), 2)) and w, 20,
                     what="the supervisor started the killed worker again")
    assert sup.alive and len(new) == 2 and sup.log_has("died (signal 9)")
    conn.close()


def write_builders(path: Path, builders: list[tuple[str, str, int]]) -> None:
    path.write_text(json.dumps([{"id": b, "app": "builder", "region": "ord", "ip": ip, "port": port}
                                for b, ip, port in builders]))


def open_tls(port: int, ctx):
    """A TLS connection through Envoy to the builder, once it routes (the backend echoes after its first line)."""
    def connect():
        raw = socket.create_connection(("127.0.0.1", port), timeout=3)
        try:
            tls = ctx.wrap_socket(raw, server_hostname=SNI)
            if tls.makefile("rb").readline().strip() == f"builder={SNI}".encode():
                return tls
        except (OSError, ValueError):
            pass
        raw.close()
        return None
    return wait_until(connect, 15, interval=0.1, what="a TLS connection through Envoy")


def envoy_replica(redis_server, node: str) -> str | None:
    raw = redis_server.client().hget(KEYS.envoys, node)
    entry = orjson.loads(raw) if raw else {}
    return entry.get("replica") if entry.get("acked", {}).get("cds") else None


def test_sigterm_stops_every_worker_gracefully(redis_server, procs):
    port = free_port()
    sup = start(procs, redis_server, port, "--workers", "2")
    ready = wait_until(lambda: workers_ready(redis_server, group_of(sup), 2), 20, what="two workers ready")
    t0 = time.monotonic()
    sup.kill(signal.SIGTERM)
    assert sup.wait(10) == 0
    assert time.monotonic() - t0 < 5
    assert not any(alive(pid_of(r)) for r in ready), "a worker outlived its supervisor"
    assert sup.log().count("INFO xds_server: stopped") == 2, sup.tail()
    assert not replicas(redis_server), "each worker withdrew its status entry"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_second_replica_on_the_same_port_exits_2(redis_server, procs, workers):
    port = free_port()
    first = start(procs, redis_server, port, "--workers", str(workers))
    first.wait_for_log("ready: version", 20)
    second = subprocess.run([str(script("xds-server")), "--redis-url", redis_server.url,
                             "--listen", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=30)
    assert second.returncode == 2, second.stderr[-500:]
    assert "--listen" in second.stderr and len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert first.alive


def test_a_replica_restarted_in_place_starts_at_once(redis_server, procs):
    port = free_port()
    leave_time_wait(port)
    assert time_wait_on(port), "the test needs a connection in TIME_WAIT on the port"
    first = start(procs, redis_server, port)
    first.wait_for_log("ready: version", 10)
    with socket.create_connection(("127.0.0.1", port), timeout=2):  # a connection the server closes on stop
        first.kill(signal.SIGTERM)
        assert first.wait(10) == 0
    t0 = time.monotonic()
    again = start(procs, redis_server, port, label="xds-again")
    again.wait_for_log("ready: version", 10)
    assert again.alive and time.monotonic() - t0 < 10


def leave_time_wait(port: int) -> None:
    """A connection on ``port`` closed first by its listening side: TIME_WAIT on 127.0.0.1:port."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(1)
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first: it keeps the TIME_WAIT
        client.recv(1)
        client.close()


def time_wait_on(port: int) -> bool:
    """A socket in TIME_WAIT (state 06) with local port ``port``, from /proc/net/tcp."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if int(local.split(":")[1], 16) == port and state == "06":
            return True
    return False
