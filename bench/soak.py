"""Soak (``make soak``, not in CI): churn for 10 minutes with leader kills, then check nothing was lost.

    python -m bench.soak [--duration 600] [--rate 20] [--streams 200] [--kill-every 120]

Real redis-server, DNS server, 2 discoverers, 2 xds-server replicas and
``--streams`` simulated Envoys (bench/loadclient.py, delta, half on each
replica). The DNS zone changes ``--rate`` times a second; every
``--kill-every`` seconds the leading discoverer is killed with SIGKILL and
started again. At the end: Redis routes equal the last DNS answer (no lost
update), every stream holds the final version, and each replica's RSS grew
less than 10% after the first minute. Exits 1 when a check fails.
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared import resources as rs
from tests.support.procs import BIN, REPO, free_port, wait_until
from tests.support.redis import start_redis
from tools.flyzone import FlyBuilder, write_zone

from .common import rss_mb, wait_ready


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--rate", type=float, default=20)
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--kill-every", type=float, default=120)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        return Soak(Path(d), args).run()


class Soak:
    def __init__(self, tmp: Path, args):
        self.tmp, self.args = tmp, args
        self.procs: dict[str, subprocess.Popen] = {}
        self.pool = [FlyBuilder(f"{0x50a4 << 40 | n:014x}", "builder", f"fdaa:0:1::{n + 1:x}", "ord")
                     for n in range(100)]
        self.present = set(range(50))
        self.holders: dict[str, str] = {}  # lease holder id -> process name

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        return self.procs[name]

    def write_zone(self) -> None:
        write_zone(self.zone, [self.pool[i] for i in sorted(self.present)])

    def discoverer(self, n: int) -> None:
        """Discoverer ``n``; each start gets a new holder id, like a new process (host:pid) would."""
        self.starts = getattr(self, "starts", 0) + 1
        holder = f"d{n}.{self.starts}"
        self.holders[holder] = f"d{n}"
        self.spawn(f"d{n}", [str(BIN / "discoverer"), "--redis-url", self.redis.url, "--app", "builder",
                             "--dns-server", f"127.0.0.1:{self.dns_port}", "--id", holder, "--log-level", "warning"])

    def run(self) -> int:
        a = self.args
        self.redis = start_redis(self.tmp / "redis")
        self.zone, self.dns_port = self.tmp / "zone.json", free_port()
        self.write_zone()
        self.spawn("dns", [sys.executable, "tools/dns_server.py", "--listen", f"127.0.0.1:{self.dns_port}",
                           "--zone", str(self.zone)])
        for n in (1, 2):
            self.discoverer(n)
        targets = []
        for n in (1, 2):
            port = free_port()
            self.spawn(f"xds{n}", [str(BIN / "xds-server"), "--redis-url", self.redis.url, "--listen",
                                   f"127.0.0.1:{port}", "--routing", "sni_cluster", "--log-level", "warning"])
            targets.append(f"127.0.0.1:{port}")
        for t in targets:
            wait_ready(t)
        outs = []
        for n, t in enumerate(targets):
            out = self.tmp / f"load{n}.json"
            outs.append(out)
            self.spawn(f"load{n}", [sys.executable, "-m", "bench.loadclient", "--target", t, "--streams",
                                    str(a.streams // 2), "--kind", "delta", "--duration", str(a.duration + 60),
                                    "--out", str(out), "--id-prefix", f"soak{n}"])
        try:
            rss = self.churn()
            time.sleep(3)
            return self.check(rss, outs)
        finally:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in self.procs.values():
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            self.redis.stop()

    def churn(self) -> dict[str, list[float]]:
        a = self.args
        start = next_kill = time.monotonic()
        next_kill += a.kill_every
        rss: dict[str, list[float]] = {"xds1": [], "xds2": []}
        next_sample, kills, changes = start, 0, 0
        while (now := time.monotonic()) - start < a.duration:
            i = random.randrange(len(self.pool))
            self.present ^= {i}
            self.write_zone()
            changes += 1
            if now >= next_kill:
                with self.redis.client() as c:
                    holder = (c.get("{xds}:leader") or b"").decode()
                name = self.holders.get(holder)
                if name is not None:
                    self.procs[name].kill()
                    self.procs[name].wait(10)
                    self.discoverer(int(name[1:]))
                    kills += 1
                    print(f"{now - start:6.0f}s killed leader {holder}", flush=True)
                next_kill += a.kill_every
            if now >= next_sample:
                for name in rss:
                    rss[name].append(rss_mb(self.procs[name].pid))
                next_sample += 10
            time.sleep(max(0.0, 1 / a.rate - (time.monotonic() - now)))
        print(f"{changes} DNS changes, {kills} leader kills", flush=True)
        return rss

    def check(self, rss: dict[str, list[float]], outs: list[Path]) -> int:
        want = {f"{self.pool[i].id}.builders.internal" for i in self.present}
        ok = True
        wait_until(lambda: self.routes() == want, 10, what="routes equal the last DNS answer")
        with self.redis.client() as c:
            final = int(c.get("{xds}:version"))
        time.sleep(2)
        for name in ("load0", "load1"):
            self.procs[name].send_signal(signal.SIGTERM)
            self.procs[name].wait(60)
        behind = 0
        for out in outs:
            for recs in json.loads(out.read_text())["records"]:
                cds = [rs.version_number(v) for t, v, _ in recs if t == "cds"]
                behind += not cds or cds[-1] != final
        print(f"final version {final}; streams not on it: {behind}")
        ok &= behind == 0
        for name, samples in rss.items():
            warm = samples[min(6, len(samples) - 1)] if samples else 0
            growth = (samples[-1] - warm) / warm * 100 if warm else 0
            print(f"{name} RSS after warm-up {warm:.1f} MB, at the end {samples[-1]:.1f} MB ({growth:+.1f}%)")
            ok &= growth < 10
        print("soak:", "PASS" if ok else "FAIL")
        return 0 if ok else 1

    def routes(self) -> set[str]:
        with self.redis.client() as c:
            return {k.decode() for k in c.hkeys("{xds}:routes")}


if __name__ == "__main__":
    raise SystemExit(main())
