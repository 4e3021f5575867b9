"""Churn: 50 builder changes per second for 60 s, 200 ADS streams attached to one replica.

    python -m bench.bench_churn [--rate 50] [--duration 60] [--streams 200] [--builders 500]
                                [--routing sni_cluster] [--kinds sotw,delta]

redis-server, one xds-server, and simulated Envoys (bench/loadclient.py: the
streams split evenly between the kinds, at most 100 per loader process). The
builder set is written straight to Redis the way the discoverer leader does
(bench.common.Writer: one fenced Lua call per change), on a fixed schedule:
additions, removals and updates in turn, the set staying near ``--builders``.

Reported: the share of one core used by the xds-server, redis-server and the
loaders during the churn; the replica's RSS before and after; the time from
a change's write to a stream holding that version or a later one (versions
written while a response is in flight are coalesced into the next); and that
every stream ends on the final version.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xds_server.config import XdsConfig

from .common import Writer, builder, cpu_seconds, pct, replica_under_load, rss_mb, save, set_version, table

PER_LOADER = 100
DEFAULT_PUSH_INTERVAL = XdsConfig.__dataclass_fields__["push_interval"].default




async def churn(url: str, base: int, rate: float, duration: float) -> tuple[list[tuple[int, float]], float]:
    """Write ``rate`` changes per second for ``duration`` seconds; [(version, wall time of the write)]."""
    written: list[tuple[int, float]] = []
    live = list(range(base))
    next_id = base
    async with Writer(url) as w:
        t_start = time.monotonic()
        for i in range(int(rate * duration)):
            delay = t_start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            op = i % 3
            t = time.time()
            if op == 0:
                version = await w.apply([builder(next_id)])
                live.append(next_id)
                next_id += 1
            elif op == 1:
                version = await w.apply(remove=[builder(live.pop(0)).id])
            else:
                n = live[i % len(live)]
                version = await w.apply([builder(n, port=1000 + i % 50000)])
            written.append((version, t))
        achieved = len(written) / (time.monotonic() - t_start)
    return written, achieved


def lags(records: list, written: list[tuple[int, float]], type_short: str = "cds") -> list[float]:
    """For each written version: seconds until this stream received it or a later one."""
    got = [(set_version(v), t) for typ, v, t in records if typ == type_short]
    out, j = [], 0
    for version, t_write in written:
        while j < len(got) and got[j][0] < version:
            j += 1
        if j == len(got):
            break
        out.append(got[j][1] - t_write)
    return out


def profile(pid: int, directory: Path | None) -> subprocess.Popen | None:
    """A py-spy flame graph of ``pid`` into ``directory`` until SIGINT (--profile)."""
    if directory is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking", "--rate", "200",
                             "--idle", "--format", "flamegraph", "-o", str(directory / "profile-churn-xds-server.svg"),
                             "--pid", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def aggregate(outputs: list[tuple[str, dict]], written: list[tuple[int, float]], final: int) -> dict[str, dict]:
    """Per kind: streams, how many ended on ``final``, every lag, CDS responses and bytes received."""
    per_kind: dict[str, dict] = {}
    for kind, data in outputs:
        agg = per_kind.setdefault(kind, {"streams": 0, "on_final": 0, "lags": [], "responses": 0, "bytes": 0})
        for recs in data["records"]:
            agg["streams"] += 1
            cds = [set_version(v) for typ, v, _ in recs if typ == "cds"]
            agg["on_final"] += bool(cds) and cds[-1] == final
            agg["lags"] += lags(recs, written)
            agg["responses"] += sum(1 for typ, v, _ in recs if typ == "cds" and set_version(v) > written[0][0] - 1)
        agg["bytes"] += data["bytes"]
    return per_kind


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=50, help="builder changes per second")
    p.add_argument("--duration", type=float, default=60, help="seconds of churn")
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--kinds", default="sotw,delta", help="the streams split evenly between these")
    p.add_argument("--builders", type=int, default=500, help="size of the set before and during the churn")
    p.add_argument("--routing", default="sni_cluster")
    p.add_argument("--push-interval", type=float, help="xds-server --push-interval (default: the server's)")
    p.add_argument("--section", default="churn", help="key in bench/results.json")
    p.add_argument("--profile", type=Path, help="write a py-spy flame graph of the xds-server during the churn here")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results.json")
    args = p.parse_args(argv)
    kinds = args.kinds.split(",")
    extra = ["--push-interval", str(args.push_interval)] if args.push_interval is not None else []
    with tempfile.TemporaryDirectory(prefix="bench-churn-") as d, \
            replica_under_load(Path(d), builders=args.builders, routing=args.routing, extra=extra,
                               per_loader=PER_LOADER, duration=args.duration + 120) as run:
        for k, kind in enumerate(kinds):
            run.loaders.start(kind, args.streams // len(kinds) + (1 if k < args.streams % len(kinds) else 0),
                              prefix=f"churn{k}-")
        run.loaders.wait_served(60)
        time.sleep(0.5)
        xds = run.replica
        pids = {"xds-server": xds.pid, "redis-server": run.plane.redis.proc.pid, **run.loaders.pids}
        rss0 = rss_mb(xds.pid)
        spy = profile(xds.pid, args.profile)
        cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
        t0 = time.monotonic()
        written, achieved = asyncio.run(churn(run.url, args.builders, args.rate, args.duration))
        elapsed = time.monotonic() - t0
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes the flame graph on SIGINT
            spy.wait(30)
        cpu = {k: round((cpu_seconds(pid) - cpu0[k]) / elapsed * 100, 1) for k, pid in pids.items()}
        rss1 = rss_mb(xds.pid)
        final = written[-1][0]
        time.sleep(3.0)  # let the last version reach every stream
        per_kind = aggregate(run.loaders.stop(), written, final)
    kinds_out = {}
    for kind, agg in per_kind.items():
        ms = [x * 1000 for x in agg["lags"]]
        kinds_out[kind] = {"streams": agg["streams"], "on_final": agg["on_final"],
                           "lag_p50_ms": round(pct(ms, 50), 1), "lag_p99_ms": round(pct(ms, 99), 1),
                           "lag_max_ms": round(max(ms, default=float("nan")), 1),
                           "cds_responses_per_s_per_stream": round(agg["responses"] / agg["streams"] / elapsed, 1),
                           "mb_received": round(agg["bytes"] / 1e6, 1)}
    result = {"rate": args.rate, "achieved_rate": round(achieved, 1), "duration_s": args.duration,
              "builders": args.builders, "routing": args.routing, "streams": args.streams, "changes": len(written),
              "push_interval_s": args.push_interval if args.push_interval is not None else DEFAULT_PUSH_INTERVAL,
              "final_version": final, "cpu_pct": cpu, "xds_rss_mb": [round(rss0, 1), round(rss1, 1)],
              "kinds": kinds_out, "all_on_final": all(k["on_final"] == k["streams"] for k in kinds_out.values())}
    print(table(f"churn: {len(written)} changes at {achieved:.1f}/s for {args.duration:.0f} s, {args.builders} builders, "
                f"{args.routing}; CPU % of one core: " + ", ".join(f"{k} {v}" for k, v in cpu.items()),
                ["kind", "streams", "on final", "lag p50 ms", "lag p99 ms", "CDS resp/s/stream", "MB received"],
                [[k, v["streams"], v["on_final"], v["lag_p50_ms"], v["lag_p99_ms"], v["cds_responses_per_s_per_stream"],
                  v["mb_received"]] for k, v in kinds_out.items()]))
    print(f"xds-server RSS {rss0:.1f} MB -> {rss1:.1f} MB; every stream on the final version: {result['all_on_final']}")
    if not args.no_save:
        save(args.section, result)
    return result


if __name__ == "__main__":
    main()
