"""What every benchmark needs: a seeded replica under simulated Envoys, process stats, percentiles.

The parts come from the harness (``harness.plane``); ``replica_under_load`` is the one skeleton
of the replica benchmarks (cpu, memory, fan-out, scale, churn): redis-server seeded with a
builder set, one xds-server serving, loaders to attach, everything stopped at the end.
"""
from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from harness.plane import Plane, Replica
from harness.procs import REPO, Proc, ProcGroup
from harness.wait import seconds_until
from harness.writer import Writer as FencedWriter
from shared.model import Builder, make_builder, parse_networks
from shared.resources import version_number as set_version  # noqa: F401 - the builder-set version a response carries

ALLOWED = parse_networks(["127.0.0.0/8", "::1/128", "fdaa::/16"])
RESULTS = REPO / "bench" / "results.json"


def builder(n: int, region: str | None = None, port: int = 443) -> Builder:
    ip = f"fdaa:0:{n >> 16:x}:{n & 0xffff:x}::2"
    return make_builder({"id": f"{n:014x}", "app": "builder", "region": region or ("ord" if n % 2 else "ams"),
                         "ip": ip, "port": port}, sni_template="{id}.builders.internal", port=port, allowed=ALLOWED)


def Writer(url: str) -> FencedWriter:
    """The harness's fenced writer on ``url``, as the benches' own lease holder."""
    return FencedWriter.connect(url, holder="bench-writer", name="bench")


def seed(url: str, count: int) -> int:
    async def go():
        async with Writer(url) as w:
            for start in range(0, count, 1000):
                await w.apply([builder(n) for n in range(start, min(count, start + 1000))])
            return w.version

    return asyncio.run(go())


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (VmHWM: its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
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
        self.group = ProcGroup(self.tmp / "loaders")
        self.procs: list[tuple[Proc, str, Path, Path]] = []  # (process, kind, out, ready)

    def start(self, kind: str, streams: int, *, region: str = "ord", prefix: str = "l",
              extra: Sequence[str] = ()) -> None:
        """``streams`` more streams; ``extra``: more loadclient flags (--jitter, --resume, --per-connection)."""
        while streams > 0:
            n, i = min(self.per_loader, streams), len(self.procs)
            out, ready, reopened = self.tmp / f"load{i}.json", self.tmp / f"ready{i}", self.tmp / f"reopened{i}"
            ready.unlink(missing_ok=True)
            reopened.unlink(missing_ok=True)
            self.procs.append((self.group.start_python(
                ["-m", "bench.loadclient", "--target", self.target, "--streams", str(n), "--kind", kind,
                 "--duration", str(self.duration), "--ready-file", str(ready), "--out", str(out),
                 "--id-prefix", f"{prefix}{i}", "--region", region, "--reopened-file", str(reopened), *extra],
                label=f"loader{i}"), kind, out, ready))
            streams -= n

    def wait_served(self, timeout: float = 90) -> float:
        """Seconds until every stream of every loader had its first CDS and LDS."""
        return seconds_until(lambda: all(ready.exists() for *_, ready in self.procs), timeout, interval=0.005,
                             what="every loader's streams served")

    def wait_reopened(self, timeout: float = 90) -> float:
        """Seconds until every stream of every loader was opened again and served since (after a failure)."""
        files = [self.tmp / f"reopened{i}" for i in range(len(self.procs))]
        return seconds_until(lambda: all(f.exists() for f in files), timeout, interval=0.005,
                             what="every loader's streams served again")

    @property
    def pids(self) -> dict[str, int]:
        return {f"loader{i}-{kind}": p.pid for i, (p, kind, _, _) in enumerate(self.procs)}

    def stop(self) -> list[tuple[str, dict]]:
        """SIGTERM every loader and wait for its output; (kind, its JSON output) per loader."""
        for p, *_ in self.procs:
            p.kill(signal.SIGTERM)
        for p, *_ in self.procs:
            p.wait(60)
        return [(kind, json.loads(out.read_text())) for _, kind, out, _ in self.procs]

    def kill(self) -> None:
        for p, *_ in self.procs:
            p.kill()
        self.group.stop_all()


@dataclass
class Run:
    """One replica benchmark's system: the plane, its replica, the seeded version, the loaders."""

    plane: Plane
    replica: Replica
    version: int  # the version of the seeded set
    ready_s: float  # from starting the server to gRPC health SERVING, Python's imports included
    loaders: Loaders

    @property
    def url(self) -> str:
        return self.plane.redis_url


@contextmanager
def replica_under_load(tmp: Path, *, builders: int, routing: str = "sni_cluster", extra=(), floor: bool = False,
                       per_loader: int = 500, duration: float = 120) -> Iterator[Run]:
    """redis-server with ``builders`` seeded, one xds-server serving (``floor``: bench/grpc_floor.py
    instead, not waited on: the loaders retry; ``extra``: flags for whichever serves); loaders to start on it; all stopped after, loaders first."""
    plane = Plane(tmp)
    loaders = None
    try:
        plane.start_redis()
        version = 0 if floor else seed(plane.redis_url, builders)
        t0 = time.monotonic()
        if floor:
            target = plane.host().hostport(plane.host().free_port())
            replica = Replica(plane.procs.start_python(["-m", "bench.grpc_floor", "--listen", target, *extra],
                                                       label="grpc_floor"), target, plane.region(None))
        else:
            replica = plane.start_replica("--routing", routing, "--log-level", "warning", *extra, wait=True)
        loaders = Loaders(replica.target, tmp, per_loader=per_loader, duration=duration)
        yield Run(plane, replica, version, time.monotonic() - t0, loaders)
    finally:
        if loaders is not None:
            loaders.kill()
        plane.close()


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

