"""End-to-end convergence: DNS zone written -> a TLS client reaches (or is refused by) the builder through Envoy.

    python -m bench.bench_convergence [--modes filter_chains,sni_cluster,delta,on_demand,fcds]
                                      [--routed 0,500] [--samples 200] [--separate]

Everything is a real process on loopback: tools/dns_server.py (zone written
with tools/flyzone.write_zone), one ``discoverer --source fly`` polling it
every 100 ms, redis-server, one ``xds-server --routing MODE`` at a time and
one Envoy 1.40 from ``xdsctl bootstrap --routing MODE`` (``delta`` is
sni_cluster with ``xdsctl bootstrap --delta``; on_demand is always delta;
``fcds`` is ``--routing filter_chains --fcds`` on both, delta ADS;
``filter_chains_delta`` is plain filter_chains over delta ADS, FCDS's baseline
with the same transport). With ``fcds`` and a filter_chains mode in one run the
result has ``fcds_ratio`` (p50 against each), and Envoy's own update durations:
``listener_manager.lds`` / ``cluster_manager.cds`` over the run, and the
per-chain ``filter_chain_manager.<chain>.update_duration`` of 20 chains added
after the samples (``fcds_chain_updates``).
The sample builders are TLS stand-ins (tools/tls_backend.py, one process, EC
certificates) on 127.0.3.1..200; the builders "already routed" point at
127.1.x.y where nothing listens.

One sample: a random pause of 0..poll-interval (so zone writes fall at a
uniformly random phase of the discoverer's poll loop), one zone write, then
two probe threads. The addition probe connects through Envoy with the new
builder's SNI every 5 ms until a TLS handshake that verifies the builder's
certificate returns the greeting ``builder=<sni>``; the removal probe does the
same for the builder the write removed until Envoy closes the connection.
Each latency is measured from the moment the zone file was replaced.

By default each zone write adds one builder and removes the previous sample's
builder (a builder replaced, as in a churning fleet); ``--separate`` makes
additions and removals separate writes (twice the run time; the figures are
the same within noise). The discoverer runs with ``--removal-grace 0``: the
default 0.5 s grace is a deliberate anti-flap delay that adds 0.5-0.6 s to
every removal. The change's Redis stream id (milliseconds, Redis's clock on
this machine) splits each latency into DNS -> Redis (poll wait, DNS query,
diff, fenced write) and Redis -> Envoy (xds-server push, Envoy applies).
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_sync

from discoverer.sources.fly import FlySource
from harness.envoy import DOWN, REFUSED, TIMED_OUT, EnvoyProc, tls_reach
from harness.host import free_port
from harness.plane import Plane
from harness.wait import wait_until
from tools.flyzone import INSTANCES, FlyBuilder, build_zone, write_json_atomic

from .common import cpu_seconds, pct, save, table

DOMAIN = "builders.internal"
POLL = 0.1
PROBE_EVERY = 0.005
SAMPLE_DEADLINE = 10.0
STATS_FLUSH = 5.0  # Envoy's default stats_flush_interval
ON_DEMAND_HELD = 0.15  # on_demand removal: a connection with no greeting after this long is held, not routed
MODES = {  # name -> (xds-server --routing, delta ADS, extra flags for both the xds-server and the bootstrap)
    "filter_chains": ("filter_chains", False, []),
    "sni_cluster": ("sni_cluster", False, []),
    "delta": ("sni_cluster", True, []),
    "on_demand": ("on_demand", True, []),
    "fcds": ("filter_chains", True, ["--fcds"]),  # filter_chains over FCDS (delta only)
    "filter_chains_delta": ("filter_chains", True, []),  # the baseline for fcds with the same transport
}
TARGETS = {  # mode -> {percentile: ms}, with 500 builders already routed; additions and removals (grace 0)
    "sni_cluster": {"p50": 60, "p99": 150},
    "delta": {"p50": 60, "p99": 150},
    "filter_chains": {"p50": 100},
    "fcds": {"p50": 100},
}
TARGETS_5000 = {"fcds": {"p50": 200}}  # with 5,000 routed
FCDS_RATIO_TARGET = 0.5  # fcds p50 / filter_chains p50 at 500 routed, same run
PER_APP_FROM = getattr(FlySource, "AUTO_PER_APP", 600)  # the discoverer's switch to per-app queries
OTHER_MACHINE = FlyBuilder("d15c0000000001", "discoverer", "127.0.0.9", "ord")  # never routed (--app builder)


def sni(builder_id: str) -> str:
    return f"{builder_id}.{DOMAIN}"


APP_SIZE = 2000  # routed builders per Fly app: vms.<app>.internal of ~3,300 machines no longer fits a DNS message


def app_of(n: int) -> str:
    """The app of the n-th routed builder: "builder" (with the samples) up to APP_SIZE, then builder1, ..."""
    return "builder" if n < APP_SIZE else f"builder{n // APP_SIZE}"


def routed_builder(n: int) -> FlyBuilder:
    """A builder already in the set; nothing listens at its address."""
    return FlyBuilder(f"a{n:013x}", app_of(n), f"127.1.{n // 250}.{n % 250 + 1}", "ord" if n % 2 else "ams")


def sample_builder(n: int, backends: int) -> FlyBuilder:
    """The n-th sample builder; its TLS stand-in listens on 127.0.3.(n % backends + 1)."""
    return FlyBuilder(f"c{n:013x}", "builder", f"127.0.3.{n % backends + 1}", "ord")


# ---------------------------------------------------------------- probing


def attempt(port: int, name: str, ctx: ssl.SSLContext, timeout: float) -> str:
    """One TLS connection through Envoy: 'ok', 'refused', 'down' (nothing listens), 'timeout' or 'wrong'."""
    got = tls_reach(port, name, ctx, timeout=timeout)
    if got == name:
        return "ok"
    return {REFUSED: "refused", DOWN: "down", TIMED_OUT: "timeout"}.get(got, "wrong")


@dataclass
class Probe:
    """Connects every ``every`` seconds until the wanted outcome; ``latency`` in seconds from t0."""

    port: int
    name: str
    want: str  # 'ok' or 'refused'
    ctx: ssl.SSLContext
    t0: float
    attempt_timeout: float
    held_is_refused: bool = False  # on_demand: a connection Envoy holds (asking for the cluster) is not routed
    every: float = PROBE_EVERY  # seconds between attempts
    latency: float | None = None
    held_s: float | None = None
    attempts: int = 0
    anomalies: dict[str, int] = field(default_factory=dict)

    def run(self) -> None:
        deadline = self.t0 + SAMPLE_DEADLINE
        while time.monotonic() < deadline:
            started = time.monotonic()
            outcome = attempt(self.port, self.name, self.ctx, self.attempt_timeout)
            self.attempts += 1
            if outcome == self.want:
                self.latency = time.monotonic() - self.t0
                return
            if outcome == "timeout" and self.held_is_refused:
                # Envoy had no cluster when this connection arrived: from then on the builder is not routed
                self.latency = started - self.t0
                self.held_s = time.monotonic() - started
                return
            if outcome not in ("ok", "refused"):
                self.anomalies[outcome] = self.anomalies.get(outcome, 0) + 1
            time.sleep(self.every)


def run_probes(probes: list[Probe]) -> None:
    threads = [threading.Thread(target=p.run, daemon=True) for p in probes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SAMPLE_DEADLINE + 10)


# ---------------------------------------------------------------- the system


def envoy_stats(envoy: EnvoyProc, pattern: str) -> dict[str, str]:
    """Envoy stats matching ``pattern``. Never call this while measuring: /stats walks every stat on
    Envoy's main thread (about 50 ms of CPU with 500 clusters; 12 ms with ``usedonly``), the thread that
    applies xDS updates."""
    out = {}
    for line in envoy.admin(f"/stats?usedonly&filter={pattern}").splitlines():
        key, _, value = line.partition(": ")
        out[key] = value
    return out


def _p50(histogram: str) -> float | None:
    """The P50 of an Envoy histogram stat line ("P0(nan,0.5) P25(...) P50(interval,cumulative) ...")."""
    for part in histogram.split():
        if part.startswith("P50("):
            value = part[4:-1].split(",")[1]
            return None if value == "nan" else round(float(value), 2)
    return None


def envoy_update_ms(envoy: EnvoyProc) -> dict[str, float]:
    """Median time Envoy took to apply a CDS / LDS update (its own histograms; the first, full load included)."""
    out = {}
    for key, value in envoy_stats(envoy, "^(cluster_manager.cds|listener_manager.lds).update_duration$").items():
        p50 = _p50(value)
        if p50 is not None:
            out[key.split(".")[1]] = p50
    return out


CHAIN_PROBES = 20  # FCDS: builders added after the samples to read Envoy's per-chain update durations


def fcds_chain_updates(stack: "Stack", envoy: EnvoyProc) -> dict[str, float]:
    """``fcds``: the median of ``filter_chain_manager.<chain>.update_duration`` over CHAIN_PROBES chains.

    Each chain has its own histogram, gone with the chain, and the admin API shows histograms only as
    of the last stats flush (every 5 s): the samples' chains live shorter than that. So after the
    samples, CHAIN_PROBES builders are added one by one (a new SNI each: matcher entry and chain, like
    a sample), left for a flush, read, and removed again.
    """
    probes = [FlyBuilder(f"e{n:013x}", "builder", f"127.2.0.{n + 1}", "ord") for n in range(CHAIN_PROBES)]
    for k in range(1, CHAIN_PROBES + 1):
        stack.write(probes[:k])
        time.sleep(0.25)
    time.sleep(STATS_FLUSH + 0.5)
    chains = [_p50(v) for v in envoy_stats(envoy, "^filter_chain_manager.e.*update_duration$").values()]
    stack.write([])
    wait_until(lambda: stack.r.hlen("{xds}:routes") == len(stack.routed), 30, what="the chain probes removed")
    chains = [c for c in chains if c is not None]
    return {"fcds": round(statistics.median(chains), 2), "fcds_chains": len(chains)} if chains else {}


class Stack:
    """A plane of redis, the DNS server, one discoverer and the TLS stand-ins; xds-server + Envoy per mode."""

    def __init__(self, tmp: Path, routed: int, backends: int, poll: float = POLL, certs: Path | None = None):
        self.tmp = tmp
        self.poll = poll
        self.plane = Plane(tmp)
        self.routed = [routed_builder(n) for n in range(routed)]
        self.backends = backends
        self.plane.certs = certs or self.plane.certs
        self.redis = self.plane.start_redis()
        self.r = redis_sync.Redis(host="127.0.0.1", port=self.redis.port, socket_timeout=5)
        self.port = free_port("127.0.3.1")
        self.plane.start_builders(
            {sni(b.id): (b.ip, self.port) for b in (sample_builder(n, backends) for n in range(backends))})
        self.ctx = self.plane.client_context()
        self.per_app = len(self.routed) + 1 >= PER_APP_FROM
        dns = self.plane.start_dns(args=["--log-level", "warning"])
        self.zone = dns.zone_path
        self.write([])
        self.discoverer = self.plane.start_discoverer(
            "--source", "fly", "--dns-server", dns.addr,
            "--poll-interval", str(poll), "--builder-port", str(self.port), "--removal-grace", "0",
            "--mass-removal-share", "1.0", "--id", "bench-discoverer", "--log-level", "warning",
            *(arg for app in sorted({"builder", *(app_of(n) for n in range(routed))}) for arg in ("--app", app)),
            *(["--per-app"] if self.per_app else []), label="discoverer")
        wait_until(lambda: self.r.hlen("{xds}:routes") == len(self.routed), 30, what="routed builders in Redis")
        self.xds = None
        self.envoy: EnvoyProc | None = None

    def write(self, extra: list[FlyBuilder]) -> tuple[float, float]:
        """Replace the zone; (monotonic, wall) time right after the rename made it visible.

        Only ``_instances.internal`` (all the discoverer reads) goes into the file: the stand-in DNS
        server re-parses every name of the zone when the file changes, and the per-machine AAAA names
        of tools/flyzone would cost it ~50-100 ms per change at 500 builders, which Fly's DNS does not.
        From PER_APP_FROM machines the discoverer runs with ``--per-app`` (it asks vms.<app>.internal and
        <id>.vm.<app>.internal), so the zone has those names and not ``_instances.internal``, whose one
        TXT record would not fit a DNS message any more (the stand-in cannot encode it, and the
        discoverer's automatic switch needs an answer that says so); per-app answers are AAAA, so
        the addresses go in IPv4-mapped (``::ffff:127.0.3.1``; the builder record maps them back).
        DNS -> Redis includes the stand-in's reload (incremental: 10-30 ms at 5,000 machines).
        """
        machines = [OTHER_MACHINE, *self.routed, *extra]
        if self.per_app:  # per-app answers are AAAA only (6PN): IPv4-mapped, the discoverer maps them back
            machines = [m._replace(ip=f"::ffff:{m.ip}") for m in machines]
        zone = build_zone(machines)
        if not self.per_app:
            zone = {k: v for k, v in zone.items() if k in (INSTANCES, "_mode")}
        else:
            zone.pop(INSTANCES, None)
        write_json_atomic(self.zone, zone)
        return time.monotonic(), time.time()

    def change_time(self, builder_id: str, field_name: str) -> float | None:
        """Wall-clock time Redis appended the change that added/removed ``builder_id``."""
        for stream_id, fields in self.r.xrevrange("{xds}:changes", count=20):
            if builder_id.encode() in fields.get(field_name.encode(), b""):
                return int(stream_id.split(b"-")[0]) / 1000
        return None

    def start_mode(self, mode: str) -> EnvoyProc:
        routing, delta, flags = MODES[mode]
        self.xds = self.plane.start_replica("--routing", routing, *flags, "--log-level", "warning",
                                            "--replica-id", f"bench-{mode}", label=f"xds-{mode}")
        self.envoy = self.plane.start_envoy(f"bench-{mode}", ads=self.xds.target, region="ord", routing=routing,
                                            delta=delta, extra_bootstrap=flags, directory=self.tmp / f"envoy-{mode}",
                                            log_level="warning")
        want = {"listener_manager.total_listeners_active": "1"}  # FCDS: active once all its chains arrived
        if routing != "on_demand":  # every builder's cluster, plus the static xDS cluster
            want["cluster_manager.active_clusters"] = str(len(self.routed) + 1)
        pattern = "^(" + "|".join(want) + ")$"
        wait_until(lambda: all(envoy_stats(self.envoy, pattern).get(k) == v for k, v in want.items()), 60,
                   interval=0.2, what=f"{mode}: Envoy holds {len(self.routed)} builders and the listener")
        return self.envoy

    def stop_mode(self) -> None:
        for part in (self.envoy, self.xds):
            if part is not None:
                self.plane.stop(part)
        self.xds = self.envoy = None

    def close(self) -> None:
        self.plane.close()
        self.r.close()


# ---------------------------------------------------------------- one mode


def start_profiles(stack: Stack, mode: str, directory: Path | None) -> list[subprocess.Popen]:
    """py-spy flame graphs of the discoverer and the xds-server while the samples run (--profile)."""
    if directory is None:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).parent / "py-spy"
    out = []
    for name, pid in (("discoverer", stack.discoverer.pid), ("xds-server", stack.xds.pid)):
        svg = directory / f"profile-{mode}-{len(stack.routed)}-{name}.svg"
        out.append(subprocess.Popen([str(spy), "record", "--nonblocking", "--rate", "200", "--idle",
                                     "--format", "flamegraph", "-o", str(svg), "--pid", str(pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return out


def stop_profiles(spies: list[subprocess.Popen]) -> None:
    for spy in spies:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for spy in spies:
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()


def run_mode(stack: Stack, mode: str, samples: int, separate: bool, seed: int,
             profile: Path | None = None) -> dict:
    envoy = stack.start_mode(mode)
    spies = start_profiles(stack, mode, profile)
    port = envoy.listener_port
    rng = random.Random(seed)
    on_demand = MODES[mode][0] == "on_demand"
    hold = 7.0 if on_demand else 2.0  # on_demand: Envoy holds a connection while it asks for the cluster

    def removal(name: str, t0: float) -> Probe:
        # on_demand: a removed name is unknown to Envoy again; it asks the server, which holds unknown names
        # under the domain for --on-demand-wait (5 s) before refusing. The first connection that is held
        # marks the removal (its start time); waiting the 5 s out would not measure convergence.
        if on_demand:
            return Probe(port, name, "refused", stack.ctx, t0, ON_DEMAND_HELD, held_is_refused=True)
        return Probe(port, name, "refused", stack.ctx, t0, hold)
    out = {"add": [], "remove": [], "add_split": [], "remove_split": [], "failures": 0, "anomalies": {}}

    held = [0]

    def note(probe: Probe, kind: str, t0w: float, builder_id: str, record: bool) -> None:
        held[0] += probe.held_s is not None
        for k, v in probe.anomalies.items():
            out["anomalies"][k] = out["anomalies"].get(k, 0) + v
        if probe.latency is None:
            out["failures"] += 1
            return
        if not record:
            return
        out[kind].append(probe.latency)
        written = stack.change_time(builder_id, "added" if kind == "add" else "removed")
        if written is not None:
            out[f"{kind}_split"].append((probe.latency, written - t0w))

    procs = {"xds-server": stack.xds.pid, "envoy": envoy.proc.pid, "discoverer": stack.discoverer.pid}
    load_start = os.getloadavg()[0]  # the machine is shared: its state goes with the figures
    cpu0 = {k: cpu_seconds(pid) for k, pid in procs.items()}
    writes = 0
    t_start = time.monotonic()
    prev: FlyBuilder | None = None
    prev_record = False
    # sample -1 is a warm-up (the first connection through a fresh Envoy), not recorded
    for i in range(-1, samples + 1):
        new = sample_builder(i % stack.backends, stack.backends) if i < samples else None
        if separate and prev is not None:
            time.sleep(rng.uniform(0, stack.poll))
            t0, t0w = stack.write([])
            writes += 1
            probe = removal(sni(prev.id), t0)
            run_probes([probe])
            note(probe, "remove", t0w, prev.id, prev_record)
            prev = None
        if new is None and prev is None:
            break
        time.sleep(rng.uniform(0, stack.poll))
        t0, t0w = stack.write([new] if new else [])
        writes += 1
        probes = []
        if new is not None:
            probes.append(Probe(port, sni(new.id), "ok", stack.ctx, t0, hold))
        if prev is not None:
            probes.append(removal(sni(prev.id), t0))
        run_probes(probes)
        if new is not None:
            note(probes[0], "add", t0w, new.id, i >= 0)
        if prev is not None:
            note(probes[-1], "remove", t0w, prev.id, prev_record)
        prev, prev_record = new, i >= 0
    elapsed = time.monotonic() - t_start
    used = {k: cpu_seconds(pid) - cpu0[k] for k, pid in procs.items()}
    stop_profiles(spies)
    time.sleep(STATS_FLUSH + 0.5)  # Envoy's admin shows histograms as of its last stats flush
    update_ms = envoy_update_ms(envoy)
    if "--fcds" in MODES[mode][2]:
        update_ms.update(fcds_chain_updates(stack, envoy))
    if on_demand:  # cross-check: every held connection must have been an on-demand lookup in Envoy
        out["on_demand_stats"] = {k.rsplit(".", 1)[1]: int(v) for k, v in envoy_stats(
            envoy, "^tcp.*on_demand_cluster_(attempt|success|missing|timeout)$").items()}
        out["held"] = held[0]
    stack.stop_mode()
    # share of one core over the run (Envoy's includes proxying the probes' connections)
    cpu_pct = {k: round(v / elapsed * 100, 1) for k, v in used.items()}
    out["loadavg"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]  # 1-minute, at start and end
    return {**out, "elapsed_s": elapsed, "cpu_pct": cpu_pct, "writes": writes, "envoy_update_ms": update_ms,
            "xds_cpu_ms_per_write": round(used["xds-server"] / max(writes, 1) * 1000, 2)}


def summarize(mode: str, routed: int, op: str, data: dict) -> dict:
    ms = [x * 1000 for x in data[op]]
    split = [(a * 1000, b * 1000) for a, b in data[f"{op}_split"]]
    row = {"mode": mode, "routed": routed, "op": op, "n": len(ms),
           "p50_ms": round(pct(ms, 50), 1), "p90_ms": round(pct(ms, 90), 1), "p99_ms": round(pct(ms, 99), 1),
           "max_ms": round(max(ms, default=float("nan")), 1),
           "dns_to_redis_p50_ms": round(pct([b for _, b in split], 50), 1),
           "redis_to_envoy_p50_ms": round(pct([a - b for a, b in split], 50), 1),
           "envoy_update_ms": data["envoy_update_ms"],
           "failures": data["failures"], "anomalies": data["anomalies"],
           "cpu_pct": data["cpu_pct"], "xds_cpu_ms_per_write": data["xds_cpu_ms_per_write"],
           "loadavg": data["loadavg"]}
    if "on_demand_stats" in data:
        st = data["on_demand_stats"]
        row["on_demand_stats"] = st
        row["held_connections"] = data["held"]
        # a held connection is an on-demand lookup that did not succeed; more "held" than that means a slow
        # but routed connection was taken for a held one (its removal time would be too early)
        row["held_misread"] = max(0, data["held"] - (st.get("on_demand_cluster_attempt", 0)
                                                     - st.get("on_demand_cluster_success", 0)))
    target = TARGETS_5000.get(mode) if routed >= 5000 else TARGETS.get(mode) if routed >= 500 else None
    if target:
        row["target"] = target
        row["met"] = all(row[f"{k}_ms"] < v for k, v in target.items())
    return row


FCDS_BASELINES = ("filter_chains", "filter_chains_delta")


def fcds_ratios(rows: list[dict]) -> list[dict]:
    """filter_chains over FCDS against plain filter_chains (SotW, the default bootstrap; and over delta ADS,
    FCDS's own transport), per size and operation, from the same run."""
    by = {(r["mode"], r["routed"], r["op"]): r for r in rows}
    out = []
    for (mode, routed, op), r in sorted(by.items()):
        for baseline in FCDS_BASELINES:
            plain = by.get((baseline, routed, op))
            if mode != "fcds" or plain is None or not plain["p50_ms"]:
                continue
            ratio = {"routed": routed, "op": op, "baseline": baseline, "fcds_p50_ms": r["p50_ms"],
                     "baseline_p50_ms": plain["p50_ms"], "ratio_p50": round(r["p50_ms"] / plain["p50_ms"], 3),
                     "envoy_update_ms": {"fcds": r["envoy_update_ms"], baseline: plain["envoy_update_ms"]}}
            if routed == 500 and baseline == "filter_chains":
                ratio["target"] = FCDS_RATIO_TARGET
                ratio["met"] = ratio["ratio_p50"] < FCDS_RATIO_TARGET
            out.append(ratio)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default="filter_chains,sni_cluster,delta,on_demand",
                   help=f"comma-separated, of {','.join(MODES)} (fcds: bench.run compares it in its own section)")
    p.add_argument("--routed", default="0,500", help="builders already routed (comma-separated sizes)")
    p.add_argument("--samples", type=int, default=200, help="additions (and removals) per mode and size")
    p.add_argument("--backends", type=int, default=200, help="TLS stand-ins (reused round-robin beyond)")
    p.add_argument("--separate", action="store_true", help="additions and removals as separate zone writes")
    p.add_argument("--poll-interval", type=float, default=POLL, help="the discoverer's --poll-interval")
    p.add_argument("--section", default="convergence", help="name of the section in bench/results.json")
    p.add_argument("--keep", help="keep logs in this directory")
    p.add_argument("--profile", type=Path, help="write py-spy flame graphs of the discoverer and xds-server here")
    args = p.parse_args(argv)
    rows, raw = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-conv-") as d:
        base = Path(args.keep or d)
        for routed in map(int, args.routed.split(",")):
            stack = Stack(base / f"routed-{routed}", routed, args.backends, args.poll_interval, base / "certs")
            try:
                for k, mode in enumerate(args.modes.split(",")):
                    data = run_mode(stack, mode, args.samples, args.separate, seed=routed * 10 + k,
                                    profile=args.profile)
                    raw[f"{mode}/{routed}"] = {op: [round(x * 1000, 2) for x in data[op]] for op in ("add", "remove")}
                    for op in ("add", "remove"):  # (latency, of which DNS -> Redis) per sample, in ms
                        raw[f"{mode}/{routed}"][f"{op}_split"] = [[round(a * 1000, 2), round(b * 1000, 2)]
                                                                  for a, b in data[f"{op}_split"]]
                    for op in ("add", "remove"):
                        rows.append(summarize(mode, routed, op, data))
                        print(rows[-1], f"({data['elapsed_s']:.0f} s)", flush=True)
            finally:
                stack.close()
            result = save_result(args, rows, raw)  # after each size: a later one that fails keeps these
    for r in result.get("fcds_ratio", []):
        print(r, flush=True)
    print(table(f"convergence: DNS zone write -> TLS through Envoy (samples {args.samples}, removal grace 0, "
                f"poll every {args.poll_interval * 1000:.0f} ms)",
                ["mode", "routed", "op", "n", "p50 ms", "p90 ms", "p99 ms", "max ms", "DNS->Redis p50", "fail"],
                [[r["mode"], r["routed"], r["op"], r["n"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"],
                  r["dns_to_redis_p50_ms"], r["failures"]] for r in rows]))
    return result


def save_result(args, rows: list[dict], raw: dict) -> dict:
    ratios = fcds_ratios(rows)
    result = {"rows": rows, "samples_ms": raw, "samples": args.samples, "separate": args.separate,
              "finished": time.strftime("%Y-%m-%d %H:%M"), "modes": args.modes.split(","),
              **({"fcds_ratio": ratios} if ratios else {}),
              "poll_interval_s": args.poll_interval, "removal_grace_s": 0, "probe_every_ms": PROBE_EVERY * 1000}
    save(args.section, result)
    return result


if __name__ == "__main__":
    main()
