"""Instant routes: an intent appended -> TLS through Envoy, beside the DNS path, in one run.

    python -m bench.bench_intents [--mode delta|fcds] [--routed 500] [--samples 200] [--waits 100] [--on-demand 50]

The stack is bench_convergence's: redis-server, the DNS stand-in with
``--routed`` builders already routed, one ``discoverer --source fly --app
builder`` polling it every 100 ms, TLS stand-ins; here one ``xds-server
--routing sni_cluster`` and one Envoy over delta ADS (``--mode delta``, section
``intents``), or the seed's layout, ``--routing filter_chains --fcds`` and an
Envoy bootstrapped for it (``--mode fcds``, section ``intents_fcds``; run with
``--routed 5000 --waits 0 --on-demand 0``). Three parts (0 skips the last two):

1 latency, interleaved sample by sample so both paths see the same machine:
  a DNS sample writes the zone with a new builder (as bench_convergence does);
  an intent sample XADDs ``op register`` to ``{xds}:intents``; each is timed
  from that write to the first TLS handshake through Envoy that reaches the
  builder (a probe every 1 ms, each after a random pause of 0..100 ms so writes
  fall at a random phase of the discoverer's poll). Intent builders are
  deregistered after their sample (also timed, until Envoy refuses them).
  Beside it: xds-server's and Envoy's CPU per change over the samples, and
  Envoy's own LDS / CDS update durations (p50, its admin histograms).
2 ``xdsctl register --wait`` as a provisioner would run it, then one
  connection, no retry: how many of ``--waits`` succeed, the time the wait
  itself took (xdsctl's ``wait_ms``: from before its XADD to the last ACK it
  waits for) and the whole command (with Python's start-up).
3 on_demand (xds-server ``--routing on_demand``, delta): XADD, then at once one
  connection, no wait: how many are served, and in how long.
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from harness.procs import script, wait_until

from .bench_convergence import (MODES, STATS_FLUSH, Probe, Stack, attempt, envoy_update_ms, run_probes, sample_builder,
                                sni)
from .common import cpu_seconds, pct, save, table

TARGETS = {  # --mode -> (ms per percentile of the intent path, the results.json section)
    "delta": ({"p50": 10, "p99": 25}, "intents"),  # sni_cluster over delta ADS, 500 routed
    "fcds": ({"p50": 150}, "intents_fcds"),  # the seed's layout: filter_chains over FCDS, 5,000 routed
}
PROBE = 0.001
INTENT_NET = "127.0.4"


def intent_id(n: int) -> str:
    return f"e{n:013x}"


class IntentStack(Stack):
    """bench_convergence's stack plus TLS stand-ins for builders that only intents announce."""

    def __init__(self, tmp: Path, routed: int, backends: int):
        super().__init__(tmp, routed, backends)
        self.intent_backends = {intent_id(n): f"{INTENT_NET}.{n + 1}" for n in range(backends)}
        self.plane.start_builders({sni(b): (ip, self.port) for b, ip in self.intent_backends.items()},
                                  label="intent-builders")

    def register(self, bid: str) -> tuple[float, str]:
        t0 = time.monotonic()
        entry = self.r.xadd("{xds}:intents", {"op": "register", "id": bid, "address": self.intent_backends[bid],
                                              "app": "builder", "region": "ord", "port": str(self.port)})
        return t0, entry.decode()

    def deregister(self, bid: str) -> float:
        t0 = time.monotonic()
        self.r.xadd("{xds}:intents", {"op": "deregister", "id": bid})
        return t0

    def change_ms(self, builder_id: str, field_name: str = "added") -> int | None:
        written = self.change_time(builder_id, field_name)
        return None if written is None else round(written * 1000)


def probe(stack: Stack, name: str, want: str, t0: float) -> Probe:
    p = Probe(stack.envoy.listener_port, name, want, stack.ctx, t0, 2.0, every=PROBE)
    run_probes([p])
    return p


# ---------------------------------------------------------------- part 1: latency


def latency(stack: IntentStack, samples: int, seed: int) -> dict:
    rng = random.Random(seed)
    out = {"dns": [], "intent": [], "intent_remove": [], "intent_split": [], "failures": {"dns": 0, "intent": 0}}
    for i in range(-1, samples):  # -1: a warm-up pair, not recorded
        time.sleep(rng.uniform(0, stack.poll))
        new = sample_builder(i % stack.backends, stack.backends)
        t0, _ = stack.write([new])  # the DNS path: this builder replaces the previous one in the zone
        dns = probe(stack, sni(new.id), "ok", t0)
        time.sleep(rng.uniform(0, stack.poll))
        bid = intent_id(i % stack.backends)
        t0, entry = stack.register(bid)
        reg = probe(stack, sni(bid), "ok", t0)
        t1 = stack.deregister(bid)
        gone = probe(stack, sni(bid), "refused", t1)
        if i < 0:
            continue
        for kind, p in (("dns", dns), ("intent", reg)):
            if p.latency is None:
                out["failures"][kind] += 1
            else:
                out[kind].append(p.latency * 1000)
        if gone.latency is not None:
            out["intent_remove"].append(gone.latency * 1000)
        written = stack.change_ms(bid)
        if reg.latency is not None and written is not None:
            out["intent_split"].append((reg.latency * 1000, written - int(entry.split("-")[0])))
    return out


def summarize_latency(data: dict, target: dict) -> dict:
    def row(ms: list[float]) -> dict:
        return {"n": len(ms), "p50_ms": round(pct(ms, 50), 1), "p90_ms": round(pct(ms, 90), 1),
                "p99_ms": round(pct(ms, 99), 1), "max_ms": round(max(ms, default=float("nan")), 1)}

    intent, dns = row(data["intent"]), row(data["dns"])
    split = data["intent_split"]
    intent["append_to_redis_p50_ms"] = round(pct([b for _, b in split], 50), 1)
    intent["redis_to_envoy_p50_ms"] = round(pct([a - b for a, b in split], 50), 1)
    intent["target"] = target
    intent["met"] = all(intent[f"{k}_ms"] < v for k, v in target.items())
    return {"intent": intent, "dns": dns, "intent_remove": row(data["intent_remove"]),
            "failures": data["failures"],
            "dns_over_intent_p50": round(dns["p50_ms"] / intent["p50_ms"], 1) if intent["p50_ms"] else None,
            "dns_over_intent_p99": round(dns["p99_ms"] / intent["p99_ms"], 1) if intent["p99_ms"] else None}


# ---------------------------------------------------------------- part 2: --wait


def waits(stack: IntentStack, count: int) -> dict:
    ok, wait_ms, command_ms, failures = 0, [], [], []
    url = stack.redis.url
    for n in range(count):
        bid = intent_id(n % stack.backends)
        t0 = time.monotonic()
        cli = subprocess.run([str(script("xdsctl")), "--redis-url", url, "--json", "register", "--id", bid,
                              "--address", stack.intent_backends[bid], "--app", "builder", "--region", "ord",
                              "--port", str(stack.port),
                              "--wait", "--timeout", "10"], capture_output=True, text=True, timeout=30)
        command_ms.append((time.monotonic() - t0) * 1000)
        result = attempt(stack.envoy.listener_port, sni(bid), stack.ctx, 2.0)  # one connection, no retry
        if cli.returncode == 0:
            wait_ms.append(orjson.loads(cli.stdout)["wait_ms"])
        if cli.returncode == 0 and result == "ok":
            ok += 1
        else:
            failures.append({"rc": cli.returncode, "connection": result, "stderr": cli.stderr[-300:]})
        probe(stack, sni(bid), "refused", stack.deregister(bid))
    return {"n": count, "first_connection_ok": ok, "wait_p50_ms": round(pct(wait_ms, 50), 1),
            "wait_p99_ms": round(pct(wait_ms, 99), 1), "command_p50_ms": round(pct(command_ms, 50), 1),
            "command_p99_ms": round(pct(command_ms, 99), 1), "failures": failures[:5]}


# ---------------------------------------------------------------- part 3: on_demand, no wait


def on_demand(stack: IntentStack, count: int) -> dict:
    served, ms, outcomes = 0, [], {}
    for n in range(count):
        bid = intent_id(n % stack.backends)
        t0, _ = stack.register(bid)
        result = attempt(stack.envoy.listener_port, sni(bid), stack.ctx, 6.0)  # Envoy holds it while it asks
        outcomes[result] = outcomes.get(result, 0) + 1
        if result == "ok":
            served += 1
            ms.append((time.monotonic() - t0) * 1000)
        stack.deregister(bid)
        time.sleep(0.05)
    return {"n": count, "served": served, "outcomes": outcomes, "p50_ms": round(pct(ms, 50), 1),
            "p99_ms": round(pct(ms, 99), 1)}


def run_parts(stack: IntentStack, args: argparse.Namespace, target: dict) -> dict:
    """The three parts on a started stack; a part with a count of 0 is skipped (None in the result)."""
    stack.start_mode(args.mode)
    wait_until(lambda: stack.r.hlen("{xds}:routes") == args.routed, 60, what="the routed set")
    procs = {"xds-server": stack.xds.pid, "envoy": stack.envoy.proc.pid}
    cpu0 = {k: cpu_seconds(pid) for k, pid in procs.items()}
    parts = {"latency": summarize_latency(latency(stack, args.samples, seed=7), target)}
    changes = 3 * (args.samples + 1)  # a sample (and the warm-up): the DNS write, the intent, its removal
    parts["cpu_ms_per_change"] = {k: round((cpu_seconds(pid) - cpu0[k]) * 1000 / changes, 2)
                                  for k, pid in procs.items()}
    time.sleep(STATS_FLUSH + 0.5)  # Envoy's admin shows histograms as of its last stats flush
    parts["envoy_update_ms"] = envoy_update_ms(stack.envoy)  # its LDS / CDS update durations, p50
    print(parts, flush=True)
    parts["wait"] = waits(stack, args.waits) if args.waits else None
    print(parts["wait"], flush=True)
    stack.stop_mode()
    parts["on_demand"] = None
    if args.on_demand:
        stack.start_mode("on_demand")
        parts["on_demand"] = on_demand(stack, args.on_demand)
    print(parts["on_demand"], flush=True)
    return parts


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=sorted(TARGETS), default="delta",
                   help="delta: sni_cluster over delta ADS; fcds: filter_chains over FCDS (the seed's layout)")
    p.add_argument("--routed", type=int, default=500, help="builders already routed")
    p.add_argument("--samples", type=int, default=200, help="DNS and intent samples each")
    p.add_argument("--waits", type=int, default=100, help="xdsctl register --wait runs (0: none)")
    p.add_argument("--on-demand", type=int, default=50, help="on_demand connections right after the append (0: none)")
    p.add_argument("--backends", type=int, default=100)
    p.add_argument("--keep", help="keep logs in this directory")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results.json")
    args = p.parse_args(argv)
    target, section = TARGETS[args.mode]
    routing, delta, flags = MODES[args.mode]
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-intents-") as d:
        stack = IntentStack(Path(args.keep or d), args.routed, args.backends)
        try:
            parts = run_parts(stack, args, target)
        finally:
            stack.close()
    result = {"routed": args.routed, "mode": args.mode, "routing": routing, "flags": flags,
              "ads": "delta" if delta else "sotw", "samples": args.samples, "probe_every_ms": PROBE * 1000,
              "poll_interval_s": stack.poll, **parts,
              "ran": {"finished": time.strftime("%Y-%m-%d %H:%M"), "loadavg_start": load_start,
                      "loadavg_end": os.getloadavg()[0], "argv": argv or []}}
    lat = parts["latency"]
    print(table(f"instant routes: write -> TLS through Envoy ({args.routed} routed, {args.mode})",
                ["path", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
                [[k, r["n"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"]]
                 for k, r in (("intent", lat["intent"]), ("DNS", lat["dns"]), ("intent removal", lat["intent_remove"]))]))
    if not args.no_save:
        save(section, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
