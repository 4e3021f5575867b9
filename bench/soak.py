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
import random
import tempfile
import time
from pathlib import Path

from harness.plane import Plane
from harness.procs import Proc
from harness.wait import wait_until
from shared import resources as rs
from tools.flyzone import FlyBuilder

from .common import Loaders, rss_mb


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
        self.plane = Plane(tmp)
        self.named: dict[str, Proc] = {}  # d1, d2, xds1, xds2
        self.pool = [FlyBuilder(f"{0x50a4 << 40 | n:014x}", "builder", f"fdaa:0:1::{n + 1:x}", "ord")
                     for n in range(100)]
        self.present = set(range(50))
        self.holders: dict[str, str] = {}  # lease holder id -> process name

    def write_zone(self) -> None:
        self.plane.dns.set_builders([self.pool[i] for i in sorted(self.present)])

    def discoverer(self, n: int) -> None:
        """Discoverer ``n``; each start gets a new holder id, like a new process (host:pid) would."""
        self.starts = getattr(self, "starts", 0) + 1
        holder = f"d{n}.{self.starts}"
        self.holders[holder] = f"d{n}"
        self.named[f"d{n}"] = self.plane.start_discoverer(
            "--app", "builder", "--dns-server", self.plane.dns.addr, "--id", holder, "--log-level", "warning",
            label=f"d{n}.{self.starts}")

    def run(self) -> int:
        a = self.args
        try:
            self.plane.start_redis()
            self.plane.start_dns()
            self.write_zone()
            for n in (1, 2):
                self.discoverer(n)
            self.loaders = []
            for n in (1, 2):
                replica = self.plane.start_replica("--routing", "sni_cluster", "--log-level", "warning",
                                                   label=f"xds{n}", wait=True)
                self.named[f"xds{n}"] = replica.proc
                self.loaders.append(Loaders(replica.target, self.tmp / f"load{n}", duration=a.duration + 60,
                                            per_loader=max(1, a.streams // 2)))
            for loaders in self.loaders:
                loaders.start("delta", a.streams // 2, prefix="soak")
            rss = self.churn()
            time.sleep(3)
            return self.check(rss)
        finally:
            for loaders in getattr(self, "loaders", []):
                loaders.kill()
            self.plane.close()

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
                kills += self.kill_leader(now - start)
                next_kill += a.kill_every
            if now >= next_sample:
                for name in rss:
                    rss[name].append(rss_mb(self.named[name].pid))
                next_sample += 10
            time.sleep(max(0.0, 1 / a.rate - (time.monotonic() - now)))
        print(f"{changes} DNS changes, {kills} leader kills", flush=True)
        return rss

    def kill_leader(self, at: float) -> int:
        """SIGKILL the leading discoverer and start it again; 1 when there was one to kill."""
        with self.plane.redis.client() as c:
            holder = (c.get("{xds}:leader") or b"").decode()
        name = self.holders.get(holder)
        if name is None:
            return 0
        self.named[name].kill()
        self.named[name].wait(10)
        self.plane.stop(self.named[name])
        self.discoverer(int(name[1:]))
        print(f"{at:6.0f}s killed leader {holder}", flush=True)
        return 1

    def check(self, rss: dict[str, list[float]]) -> int:
        want = {f"{self.pool[i].id}.builders.internal" for i in self.present}
        ok = True
        wait_until(lambda: self.routes() == want, 10, what="routes equal the last DNS answer")
        with self.plane.redis.client() as c:
            final = int(c.get("{xds}:version"))
        time.sleep(2)
        behind = 0
        for loaders in self.loaders:
            for _, data in loaders.stop():
                for recs in data["records"]:
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
        with self.plane.redis.client() as c:
            return {k.decode() for k in c.hkeys("{xds}:routes")}


if __name__ == "__main__":
    raise SystemExit(main())
