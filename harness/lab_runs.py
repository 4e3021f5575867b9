"""What the regions lab measures (issue 20), one function per scenario, used by tests/regions (which
assert on the figures) and bench/bench_regions.py (which records them). Each takes a started
``Lab`` and returns a dict of figures; every wait is on the event itself and bounded.
"""
from __future__ import annotations

import asyncio
import json
import random
import statistics
import subprocess
import threading
import time

from shared.connect import aclose, connect
from shared.keys import Keys
from shared.status import EnvoyStatus, fresh
from shared.store import Store

from .envoy import tls_reach
from .netns import in_netns
from .plane import sni
from .procs import script
from .regions import Lab, LabSpec
from .wait import seconds_until, wait_until

CUT = "cut off from the primary"  # what xds_server/cutoff.py logs


def run_in(lab: Lab, region: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """A command in ``region``'s namespace."""
    return subprocess.run(lab.hosts[region].argv(argv), capture_output=True, text=True, timeout=timeout)


def routed(envoy, bid: str) -> bool:
    return sni(bid) in envoy.clusters()


def p50_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


class Prober:
    """Connects through one Envoy to each of ``builders`` again and again (a random pause between
    rounds: it never phase-locks with a poller) until stopped; counts what failed."""

    def __init__(self, envoy, builders: list[str], ctx):
        self.envoy, self.builders, self.ctx = envoy, builders, ctx
        self.ok, self.failed = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for bid in self.builders:
                got = tls_reach(self.envoy.listener_port, sni(bid), self.ctx, host=self.envoy.host.address)
                if got == sni(bid):
                    self.ok += 1
                else:
                    self.failed.append((time.time(), bid, str(got)))
            self._stop.wait(random.uniform(0.01, 0.05))

    def __enter__(self) -> "Prober":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def xdsctl_status(lab: Lab, region: str) -> str:
    out = run_in(lab, region, str(script("xdsctl")), "--redis-url", lab.redis_url(region), "status")
    if out.returncode != 0:
        raise RuntimeError(f"xdsctl status in {region}: {out.stderr}")
    return out.stdout


# --- a region cut off (item 2) ------------------------------------------------------------------
def cut_off(lab: Lab, region: str, seconds: float, new: tuple[str, str]) -> dict:
    """Cut ``region`` from the primary's for ``seconds`` while probing its builders through its Envoy
    and adding ``new`` to DNS in the primary's region; heal; the figures."""
    xds, envoy = lab.replicas[region], lab.envoy(region)
    known = [bid for bid, _ in lab.builders[region]]
    before = envoy.clusters()
    primary = lab.primary_region
    said_before = xds.log_has(CUT) or "cut off" in xdsctl_status(lab, region)
    with Prober(envoy, known, lab.plane.client_context()) as prober:
        wait_until(lambda: prober.ok >= 2 * len(known), 10, what="the prober reaching the builders")
        cut_at = time.monotonic()
        lab.wan.cut(primary, region)
        first_warning = seconds_until(lambda: xds.log_has(CUT), 10, what="the cut-off WARNING")
        reachable = lab.metrics(region)["xds_primary_reachable"]
        version = lab.metrics(region)["xds_version"]
        lab.set_dns({**lab.builders, primary: [*lab.builders[primary], new]})
        wait_until(lambda: lab.metrics(primary)["xds_version"] > version, 10, what="the primary's region moving on")
        wait_until(lambda: lab.metrics(region)["xds_read_master_link_down_seconds"] > 0, 10, what="link down")
        status = xdsctl_status(lab, region)
        wait_until(lambda: xds.log().count(CUT) >= 2, 10, what="the WARNING said again")
        wait_until(lambda: time.monotonic() - cut_at >= seconds, seconds + 1, interval=0.1, what="the cut lasting")
        kept = lab.metrics(region)["xds_version"]
        during = envoy.clusters()
        lab.wan.heal(primary, region)
        converged = seconds_until(lambda: routed(envoy, new[0]), 10, what="the new builder routed after the heal")
    wait_until(lambda: lab.metrics(region)["xds_primary_reachable"] == 1, 10, what="the primary reachable again")
    return {"cut_s": seconds, "said_before_cut": said_before, "first_warning_s": round(first_warning, 2),
            "primary_reachable_during": reachable, "status_says_link_down": "link to the primary is down" in status,
            "warnings": xds.log().count(CUT), "version_before": version, "version_kept": kept,
            "connections": prober.ok, "failed_connections": len(prober.failed), "failures": prober.failed[:5],
            "routes_removed": len(before - during), "converged_after_heal_s": round(converged, 2)}


# --- a far provisioner (item 3) -----------------------------------------------------------------
def register_wait(lab: Lab, region: str, n: int, *urls: str) -> tuple[float, float, dict]:
    """One ``xdsctl register --wait`` process in ``region`` for a builder of the last region:
    its own wait_ms, its wall time (interpreter start-up included), its result."""
    started = time.perf_counter()
    out = run_in(lab, region, str(script("xdsctl")), "register", *urls, "--json", "--id", f"5{n:013x}",
                 "--address", f"fdaa:0:2::{n + 0x200:x}", "--region", lab.spec.regions[-1], "--wait",
                 "--timeout", "15", timeout=60)
    took = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"register --wait in {region}: {out.stderr}{out.stdout}")
    result = json.loads(out.stdout)
    return result["wait_ms"] / 1000, took, result


def far_provisioner(lab: Lab, runs: int = 5) -> dict:
    """register --wait from the primary's region and from the last (far) one, alternately."""
    near, far = lab.primary_region, lab.spec.regions[-1]
    urls = {near: ("--redis-url", lab.primary_url),
            far: ("--redis-url", lab.primary_url, "--redis-read-url", lab.redis_url(far))}
    every = {e.node_id for e in lab.plane.envoys}  # each region's replica reports its Envoys over the WAN:
    wait_until(lambda: live_envoys(lab) >= every, 30, what="every Envoy in {xds}:envoys")  # --wait counts those
    *_, warm = register_wait(lab, near, 0, *urls[near])
    got: dict[str, list] = {near: [], far: []}
    for n in range(1, runs + 1):
        for k, region in enumerate((near, far)):
            got[region].append(register_wait(lab, region, 2 * n + k, *urls[region]))
    rtt = lab.rtt(near, far)
    out = {"rtt_ms": rtt * 1000, "runs": runs, "acked_by": sorted(warm["envoys"])}
    for name, region in (("near", near), ("far", far)):
        out[f"{name}_wait_p50_ms"] = p50_ms([r[0] for r in got[region]])
        out[f"{name}_wall_p50_ms"] = p50_ms([r[1] for r in got[region]])
    out["extra_rtt"] = round((out["far_wait_p50_ms"] - out["near_wait_p50_ms"]) / 1000 / rtt, 2)
    return out


# --- leadership (item 4) ------------------------------------------------------------------------
def on_primary(lab: Lab, read):
    """``read(store)`` on the primary (from here: the test's namespace reaches every region directly)."""
    async def run():
        client = connect(lab.primary_url, name="lab")
        try:
            return await read(Store(client, Keys()))
        finally:
            await aclose(client)

    return asyncio.run(run())


def changes(lab: Lab) -> list:
    """The primary's change stream."""
    return on_primary(lab, lambda store: store.recent_changes(1000))


def live_envoys(lab: Lab) -> set[str]:
    """The Envoys ``{xds}:envoys`` on the primary shows live: those ``register --wait`` waits for."""
    entries = on_primary(lab, lambda store: store.get_status(store.keys.envoys))
    return set(fresh(entries, EnvoyStatus, time.time()))


def leader_cut(lab: Lab, new: tuple[str, str]) -> dict:
    """The leader (``lab.spec.leader``, far) cut from the primary; a builder appears in DNS at once."""
    far, near = lab.spec.leader, lab.primary_region
    epochs = {c.epoch for c in changes(lab)}
    standby_led_before = lab.discoverers[near].log_has("leadership won")
    cut_at, cut_wall = time.monotonic(), lab.wan.cut(near, far)
    lab.set_dns({**lab.builders, near: [*lab.builders[near], new]})
    epoch = max(epochs)
    wait_until(lambda: any(c.epoch > epoch for c in changes(lab)), lab.spec.lease_ttl + 10, what="a new leader's write")
    took = time.monotonic() - cut_at
    lab.discoverers[far].wait_for_log("leadership lost", 10)
    lab.discoverers[far].wait_for_log("as a standby", 10)
    lab.wan.heal(near, far)
    lab.discoverers[far].wait_for_log("reachable again", 15)  # what it held in the partition has landed
    late = [c.version for c in changes(lab) if c.epoch <= epoch and c.written_at > cut_wall]
    return {"lease_ttl_s": lab.spec.lease_ttl, "epochs_before": sorted(epochs), "standby_led_before": standby_led_before,
            "standby_wrote_after_s": round(took, 2), "old_leader_writes_landed": len(late)}


# --- the primary's region lost (item 5) ---------------------------------------------------------
# syd's replica promoted first: ams' discoverer is then 250 ms from the new master, where a new
# connection costs its whole 1 s lease-call bound (discoverer/election.py ``_connect``).
PRIMARY_LOST = LabSpec(regions=("ord", "ams", "syd"), sentinels=True, builders=1,
                       replica_priority=(("syd", 10), ("ams", 100)))


def primary_lost(lab: Lab, new: tuple[str, str], watch: str) -> dict:
    """Cut the primary's region from every other; a builder appears in DNS; ``watch``'s Envoy."""
    primary, envoy = lab.primary_region, lab.envoy(watch)
    before = envoy.clusters()
    master_before = lab.master_address(watch)
    routed_before = routed(envoy, new[0])
    lost_at = time.monotonic()
    for region in lab.spec.regions[1:]:
        lab.wan.cut(primary, region)
    lab.set_dns({**lab.builders, watch: [*lab.builders[watch], new]})
    wait_until(lambda: lab.master_address(watch) != lab.address(primary), 60, interval=0.05, what="a promotion")
    promoted = time.monotonic() - lost_at
    wait_until(lambda: routed(envoy, new[0]), 30, interval=0.05, what="the new builder routed")
    first_route = time.monotonic() - lost_at
    return {"down_after_s": lab.spec.down_after_ms / 1000, "lease_ttl_s": lab.spec.lease_ttl,
            "master_before_was_primary": master_before == lab.address(primary), "routed_before": routed_before,
            "promoted_after_s": round(promoted, 2), "first_new_route_s": round(first_route, 2),
            "new_master_region": next(r for r in lab.spec.regions if lab.address(r) == lab.master_address(watch)),
            "routes_lost": sorted(before - envoy.clusters())}


# --- latency of intents and DNS changes across regions (items 1 and 4) -----------------------------
def intent_latency(lab: Lab, region: str, n: int = 10) -> dict:
    """An intent appended in ``region`` (a client there, through the WAN): until each region's Envoy routes it."""
    async def run() -> dict[str, list[float]]:
        with in_netns(lab.hosts[region].netns):  # the client's socket is made in that region
            client = connect(lab.primary_url, name="lab-intents")
            await client.ping()
        store, got = Store(client, Keys()), {r: [] for r in lab.spec.regions}
        try:
            for k in range(n):
                bid = f"6{k:013x}"
                sent = time.monotonic()  # the XADD runs while we watch: its reply comes a round trip later
                add = asyncio.ensure_future(store.append_intent(
                    {"op": "register", "id": bid, "address": f"fdaa:0:3::{k + 1:x}", "app": "builder",
                     "region": region}))
                await asyncio.sleep(0.001)  # the command is on the wire
                pending = {r: lab.envoy(r) for r in lab.spec.regions}
                while pending:
                    for r, envoy in list(pending.items()):
                        if routed(envoy, bid):
                            got[r].append(time.monotonic() - sent)
                            del pending[r]
                    if time.monotonic() - sent > 10:
                        raise TimeoutError(f"intent {bid} not routed in {sorted(pending)}")
                    await asyncio.sleep(0.002)
                await add
                await asyncio.sleep(random.uniform(0.05, 0.15))
        finally:
            await aclose(client)
        return got

    got = asyncio.run(run())
    return {"from": region, "n": n, **{f"{r}_p50_ms": p50_ms(v) for r, v in got.items()},
            **{f"{r}_one_way_ms": lab.rtt(region, r) * 500 for r in lab.spec.regions if r != region}}


def dns_latency(lab: Lab, n: int = 10) -> dict:
    """A builder added to every region's DNS: until each region's Envoy routes it."""
    got: dict[str, list[float]] = {r: [] for r in lab.spec.regions}
    home = lab.primary_region
    for k in range(n):
        bid, address = f"7{k:013x}", f"fdaa:0:4::{k + 1:x}"
        changed = time.monotonic()
        lab.set_dns({**lab.builders, home: [*lab.builders[home], (bid, address)]})
        pending = {r: lab.envoy(r) for r in lab.spec.regions}
        deadline = changed + 15
        while pending and time.monotonic() < deadline:
            for r, envoy in list(pending.items()):
                if routed(envoy, bid):
                    got[r].append(time.monotonic() - changed)
                    del pending[r]
            time.sleep(0.002)
        if pending:
            raise TimeoutError(f"DNS builder {bid} not routed in {sorted(pending)}")
        time.sleep(random.uniform(0.05, 0.3))
    return {"n": n, "poll_s": lab.spec.poll_interval, "leader": lab.spec.leader or home,
            **{f"{r}_p50_ms": p50_ms(v) for r, v in got.items()}}
