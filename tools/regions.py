"""The regions lab for a person: ``python -m tools.regions [--regions ord,syd] [--sentinels]`` (root).

Starts harness/regions.py's lab (each region a network namespace, a user-space WAN at Fly's
RTTs between them, the Redis primary in the first region and a replica in each other, per
region a DNS stand-in, a discoverer, an xds-server, TLS builders and an Envoy), prints where
everything runs, then a live line per region every ``--every`` seconds: the version its
xds-server serves, whether it reaches the primary, how long its Redis has lost its master,
the routes its Envoy holds. Type a command and Enter:

    cut ord syd | heal ord syd     hold / release the WAN path (a partition where TCP keeps retrying)
    add syd                        a new builder in syd's DNS (every region's zone)
    status syd                     ``xdsctl status`` in syd, against syd's Redis
    quit                           stop everything (Ctrl-C too); the namespaces are removed
"""
from __future__ import annotations

import select
import sys
import tempfile
import time
from pathlib import Path

from harness.lab_runs import xdsctl_status
from harness.regions import Lab, LabSpec
from shared.config import Parser, seconds
from shared.errors import ConfigError


def describe(lab: Lab) -> str:
    lines = []
    for region in lab.spec.regions:
        role = "primary" if region == lab.primary_region else "replica"
        lines.append(f"{region:>4}: namespace {lab.namespaces[region].name}, address {lab.address(region)}, "
                     f"Redis {role} {lab.redis_url(region)}, Envoy listener "
                     f"{lab.hosts[region].hostport(lab.envoy(region).listener_port)}")
    return "\n".join(lines)


def view(lab: Lab) -> str:
    cells = []
    for region in lab.spec.regions:
        try:
            m = lab.metrics(region)
            routes = len(lab.envoy(region).clusters())
            reach = "reaches primary" if m.get("xds_primary_reachable") == 1 else "CUT OFF"
            down = m.get("xds_read_master_link_down_seconds", 0)
            cells.append(f"{region} v{m.get('xds_version', 0):.0f} {reach}"
                         + (f" (link down {down:.0f}s)" if down else "") + f", {routes} routes")
        except OSError as exc:
            cells.append(f"{region}: {exc.__class__.__name__}")
    return time.strftime("%H:%M:%S ") + " | ".join(cells)


def command(lab: Lab, line: str) -> bool:
    """Run one typed command; False to quit."""
    words = line.split()
    if not words:
        return True
    op, args = words[0], words[1:]
    try:
        if op == "quit":
            return False
        if op in ("cut", "heal") and len(args) == 2:
            getattr(lab.wan, op)(*args)
        elif op == "add" and len(args) == 1 and args[0] in lab.builders:
            n = sum(len(b) for b in lab.builders.values())
            bid = f"{lab.spec.regions.index(args[0]) + 1:02x}{0xaa0000 + n:012x}"
            lab.set_dns({**lab.builders, args[0]: [*lab.builders[args[0]], (bid, f"fdaa:0:9::{n:x}")]})
            print(f"added {bid} in {args[0]}'s DNS")
        elif op == "status" and len(args) == 1 and args[0] in lab.builders:
            print(xdsctl_status(lab, args[0]))
        else:
            print("commands: cut A B | heal A B | add REGION | status REGION | quit")
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"{op}: {exc}")
    return True


def main(argv: list[str] | None = None) -> int:
    p = Parser(description="The regions lab, live (root).")
    p.add_argument("--regions", default="ord,syd", help="comma-separated; the first holds the Redis primary")
    p.add_argument("--sentinels", action="store_true", help="a sentinel per region (needs three regions)")
    p.add_argument("--every", type=seconds, default=2.0, help="seconds between status lines")
    p.add_argument("--duration", type=seconds, default=3600.0, help="stop after this many seconds")
    args = p.parse_args(argv)
    regions = tuple(r.strip() for r in args.regions.split(",") if r.strip())
    if len(regions) < 2 or (args.sentinels and len(regions) < 3):
        p.error("--regions: at least two (three with --sentinels)")
    with tempfile.TemporaryDirectory(prefix="regions-lab-") as tmp:
        print(f"starting the lab in {tmp} ...", flush=True)
        with Lab(Path(tmp), LabSpec(regions=regions, sentinels=args.sentinels)) as lab:
            print(describe(lab), flush=True)
            deadline, inputs = time.monotonic() + args.duration, [sys.stdin]
            while time.monotonic() < deadline:
                print(view(lab), flush=True)
                ready, _, _ = select.select(inputs, [], [], args.every)  # no input left: a bounded pause
                line = sys.stdin.readline() if ready else "\n"
                if not line:
                    inputs = []  # stdin closed: keep showing until --duration
                elif not command(lab, line):
                    break
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)
    except KeyboardInterrupt:
        raise SystemExit(130)
