"""A replica's death under many Envoys, with real processes: two xds-server replicas, a few hundred
simulated delta Envoys (bench/loadclient.py: jittered reconnect to the next replica, with
``initial_resource_versions``), the first replica SIGKILLed. Every stream is served again by the
survivor, whose two workers (``--workers 2``) share them, and none is sent a resource it holds already:
only the change written during the storm."""
from __future__ import annotations

import json
import signal

import pytest

from harness.procs import async_wait_until, free_port

from .harness import builder
from .test_workers import replicas, start

pytestmark = [pytest.mark.timeout(180)]
STREAMS, BUILDERS = 300, 50


def after(data: dict, t: float, i: int) -> list[tuple[str, int]]:
    """(type, resources) of every response stream ``i`` got after ``t``."""
    return [(typ, n) for (typ, _, at), n in zip(data["records"][i], data["counts"][i]) if at > t]


async def test_a_killed_replicas_streams_are_served_again_and_resent_only_the_change(
        writer, redis_server, procs, tmp_path):
    await writer.put(*(builder(f"s{n:04d}") for n in range(BUILDERS)))
    ports = [free_port(), free_port()]
    first = start(procs, redis_server, ports[0], "--replica-id", "r0", label="xds0")
    start(procs, redis_server, ports[1], "--replica-id", "r1", "--workers", "2", label="xds1")
    survivor = ("r1/0", "r1/1")

    async def all_ready():
        return all(replicas(redis_server).get(r, {}).get("ready") for r in ("r0", *survivor))
    await async_wait_until(all_ready, 30, what="the first replica and the survivor's two workers ready")
    ready, reopened, out = tmp_path / "ready", tmp_path / "reopened", tmp_path / "envoys.json"
    envoys = procs.start_python(
        ["-m", "bench.loadclient", "--target", ",".join(f"127.0.0.1:{p}" for p in ports), "--streams", str(STREAMS),
         "--kind", "delta", "--duration", "150", "--jitter", "0.5", "--resume", "--per-connection", "10",
         "--ready-file", str(ready), "--reopened-file", str(reopened), "--out", str(out)], label="envoys")

    await async_wait_until(exists(ready), 60, what=f"{STREAMS} streams served by the first replica")
    first.kill(signal.SIGKILL)
    await writer.put(builder("storm"))  # a change while the streams move
    await async_wait_until(exists(reopened), 60, what="every stream served again by the survivor")

    async def shared():
        counts = [replicas(redis_server).get(r, {}).get("streams", 0) for r in survivor]
        return counts if sum(counts) == STREAMS else None
    counts = await async_wait_until(shared, 15, what=f"{STREAMS} streams in the survivor's status")
    assert min(counts) > 0, f"the storm went to one worker: {counts}"
    envoys.kill(signal.SIGTERM)
    await async_wait_until(exists(out), 30, what="the simulated Envoys' records")
    data = json.loads(out.read_text())

    assert all(after(data, 0, i)[0] == ("cds", BUILDERS) for i in range(STREAMS)), \
        "a stream that holds nothing is sent every builder (a resend would show in the counts)"
    for i in range(STREAMS):
        assert [at for at, _ in data["opens"][i]][:2] == [0, 1], f"stream {i} moved to the survivor"
        got = after(data, data["opens"][i][1][1], i)
        assert {typ for typ, _ in got} >= {"cds", "lds"}, f"stream {i} was served again"
        assert sum(n for typ, n in got if typ == "cds") == 1, f"stream {i}: only the new builder, nothing it held"
        assert sum(n for typ, n in got if typ == "lds") <= 1


def exists(path):
    async def check():
        return path.exists()
    return check
