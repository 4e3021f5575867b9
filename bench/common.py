"""What every benchmark needs: real servers, a seeded builder set, process stats, percentiles."""
from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.support.lease import acquire
from shared.connect import aclose, connect
from shared.keys import Keys
from shared.model import Builder, make_builder, parse_networks
from shared.store import Lease, Store
from tests.support.procs import BIN, REPO, free_port, wait_until
from tests.support.redis import RedisServer, start_redis

ALLOWED = parse_networks(["127.0.0.0/8", "::1/128", "fdaa::/16"])
RESULTS = REPO / "bench" / "results.json"


def builder(n: int, region: str | None = None, port: int = 443) -> Builder:
    ip = f"fdaa:0:{n >> 16:x}:{n & 0xffff:x}::2"
    return make_builder({"id": f"{n:014x}", "app": "builder", "region": region or ("ord" if n % 2 else "ams"),
                         "ip": ip, "port": port}, sni_template="{id}.builders.internal", port=port, allowed=ALLOWED)


class Writer:
    """Writes the builder set the way the discoverer leader does (one fenced call per change)."""

    def __init__(self, url: str):
        self.store = Store(connect(url, name="bench"), Keys())
        self.lease: Lease | None = None
        self.version = 0

    async def __aenter__(self) -> "Writer":
        self.lease = await acquire(self.store, "bench-writer", 600_000)
        self.version = self.lease.version
        return self

    async def __aexit__(self, *exc) -> None:
        await aclose(self.store.client)

    async def apply(self, upsert=(), remove=()) -> int:
        self.version = await self.store.apply(self.lease, self.version, list(upsert), list(remove))
        return self.version


def seed(url: str, count: int) -> int:
    async def go():
        async with Writer(url) as w:
            for start in range(0, count, 1000):
                await w.apply([builder(n) for n in range(start, min(count, start + 1000))])
            return w.version

    return asyncio.run(go())


def start_xds(url: str, log: Path, *, routing: str = "sni_cluster", extra: list[str] = ()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    out = open(log, "ab")
    proc = subprocess.Popen([str(BIN / "xds-server"), "--redis-url", url, "--listen", f"127.0.0.1:{port}",
                             "--routing", routing, "--log-level", "warning", *extra],
                            stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    return proc, f"127.0.0.1:{port}"


def wait_ready(target: str, timeout: float = 30) -> float:
    """Seconds until the gRPC health service answers SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    t0 = time.monotonic()

    def serving():
        with grpc.insecure_channel(target) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            return resp.status == health_pb2.HealthCheckResponse.SERVING

    wait_until(serving, timeout, interval=0.01, what="xds-server ready")
    return time.monotonic() - t0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid``, in ns precision (schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e9


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, {platform.system()}"


def save(section: str, data) -> None:
    """Merge ``data`` under ``section`` into bench/results.json."""
    try:
        results = json.loads(RESULTS.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        results = {}
    results[section] = data
    results["machine"] = machine()
    results["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True))


def table(title: str, header: list[str], rows: list[list], left: int = 0) -> str:
    """A plain-text table; the first ``left`` columns are left-aligned, the others right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [title, line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
    return "\n".join(out)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


__all__ = ["RedisServer", "start_redis", "free_port", "wait_until", "REPO", "BIN"]
