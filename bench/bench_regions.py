"""The regions lab's figures (issue 20), in one run, into bench/results.json under ``regions``.

    python -m bench.bench_regions [--samples 10] [--cut 60] [--parts intents,dns,register,cut,leader,primary]

Each part starts the lab (harness/regions.py: regions as network namespaces, the user-space
WAN at Fly's RTTs, ord-syd 180 ms) and runs the scenario of harness/lab_runs.py that the
tests in tests/regions assert on:

- ``intents``: an intent appended in syd -> route at syd's and ord's Envoys (p50);
- ``dns``: a builder added to DNS -> route in every region, the leader near (ord) and far (syd);
- ``register``: ``xdsctl register --wait`` from syd vs from ord (its wait_ms, and the wall time);
- ``cut``: syd cut off from ord for ``--cut`` seconds (60 in the issue's number);
- ``leader``: the leader (syd) cut from the primary: the ord standby's first write, fencing;
- ``primary``: ord (the primary's region) lost with sentinels in ord, ams, syd.

Root only (``ip netns``).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from harness import lab_runs
from harness.regions import Lab, LabSpec

from .common import RESULTS, save

PARTS = ("intents", "dns", "register", "cut", "leader", "primary")


def in_lab(spec: LabSpec, run, *args, **kw) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-regions-") as tmp:
        lab = Lab(Path(tmp), spec).start()
        try:
            return run(lab, *args, **kw)
        finally:
            lab.close()


def part(name: str, args) -> dict:
    if name == "intents":
        return in_lab(LabSpec(), lab_runs.intent_latency, "syd", n=args.samples)
    if name == "dns":
        return {"leader_near": in_lab(LabSpec(leader="ord"), lab_runs.dns_latency, n=args.samples),
                "leader_far": in_lab(LabSpec(leader="syd"), lab_runs.dns_latency, n=args.samples)}
    if name == "register":
        return in_lab(LabSpec(), lab_runs.far_provisioner, runs=args.samples)
    if name == "cut":
        return in_lab(LabSpec(), lab_runs.cut_off, "syd", args.cut, new=("01ffffffffffff", "fdaa:0:1::fff"))
    if name == "leader":
        return in_lab(LabSpec(leader="syd"), lab_runs.leader_cut, new=("01eeeeeeeeeeee", "fdaa:0:1::eee"))
    return in_lab(lab_runs.PRIMARY_LOST, lab_runs.primary_lost, new=("03dddddddddddd", "fdaa:0:3::ddd"), watch="syd")


def previous() -> dict:
    try:
        return json.loads(RESULTS.read_text()).get("regions", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=10, help="samples per latency figure")
    p.add_argument("--cut", type=float, default=60.0, help="seconds syd stays cut off")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {','.join(PARTS)}")
    args = p.parse_args(argv)
    results = previous()  # a run of some --parts keeps the figures of the others
    for name in [x for x in args.parts.split(",") if x]:
        if name not in PARTS:
            p.error(f"--parts: {name!r} is not one of {', '.join(PARTS)}")
        started = time.monotonic()
        results[name] = part(name, args)
        results.setdefault("measured", {})[name] = {"at": time.strftime("%Y-%m-%d %H:%M"),
                                                   "command": "python -m bench.bench_regions " + " ".join(argv or [])}
        print(f"{name} ({time.monotonic() - started:.0f}s): {results[name]}", flush=True)
        results["rtt_ms"] = {"ord-ams": 90, "ord-syd": 180, "ams-syd": 250}
        save("regions", results)  # after each part: a later part that fails keeps these
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
