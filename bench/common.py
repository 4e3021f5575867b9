"""What every benchmark needs: real servers, a seeded builder set, process stats, percentiles."""
from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.support.lease import acquire
from shared.connect import aclose, connect
from shared.keys import Keys
from shared.resources import version_number as set_version  # the builder-set version a response carries
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


def proc_cpu(pid: int) -> float:
    """utime + stime of the whole process (every thread), from /proc/<pid>/stat, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (threads of one name summed), from /proc/<pid>/task/*/stat.

    The main thread (the event loop) is "main"; Python threads keep the process's name
    (for an xds-server, grpc.aio's completion-queue poller); grpc-core's are "event_engine" etc.
    """
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        name = "main" if task.name == str(pid) else text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


class Loaders:
    """Simulated Envoys (bench/loadclient.py) in subprocesses, at most ``per_loader`` streams each."""

    def __init__(self, target: str, tmp: Path, *, per_loader: int = 500, duration: float = 120):
        self.target, self.tmp, self.per_loader, self.duration = target, Path(tmp), per_loader, duration
        self.procs: list[tuple[subprocess.Popen, str, Path, Path]] = []  # (process, kind, out, ready)

    def start(self, kind: str, streams: int, *, region: str = "ord") -> None:
        while streams > 0:
            n, i = min(self.per_loader, streams), len(self.procs)
            out, ready = self.tmp / f"load{i}.json", self.tmp / f"ready{i}"
            ready.unlink(missing_ok=True)
            self.procs.append((subprocess.Popen(
                [sys.executable, "-m", "bench.loadclient", "--target", self.target, "--streams", str(n),
                 "--kind", kind, "--duration", str(self.duration), "--ready-file", str(ready), "--out", str(out),
                 "--id-prefix", f"l{i}", "--region", region], cwd=REPO), kind, out, ready))
            streams -= n

    def wait_served(self, timeout: float = 90) -> float:
        """Seconds until every stream of every loader had its first CDS and LDS."""
        t0 = time.monotonic()
        while not all(ready.exists() for *_, ready in self.procs):
            if time.monotonic() - t0 > timeout:
                raise TimeoutError("loaders did not all connect")
            time.sleep(0.05)
        return time.monotonic() - t0

    @property
    def pids(self) -> dict[str, int]:
        return {f"loader{i}-{kind}": p.pid for i, (p, kind, _, _) in enumerate(self.procs)}

    def stop(self) -> list[tuple[str, dict]]:
        """SIGTERM every loader; (kind, its JSON output) per loader."""
        for p, *_ in self.procs:
            p.send_signal(signal.SIGTERM)
        for p, *_ in self.procs:
            p.wait(60)
        return [(kind, json.loads(out.read_text())) for _, kind, out, _ in self.procs]

    def kill(self) -> None:
        for p, *_ in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def cleanup(loaders: Loaders | None, server: subprocess.Popen | None, redis: RedisServer) -> None:
    """A benchmark's ``finally``: kill the loaders, stop the server gracefully, stop Redis."""
    if loaders is not None:
        loaders.kill()
    if server is not None and server.poll() is None:
        server.terminate()
        server.wait(15)
    redis.stop()


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
    results.setdefault("measured", {})[section] = time.strftime("%Y-%m-%d %H:%M")
    results.setdefault("load_at_end", {})[section] = round(os.getloadavg()[0], 2)
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
