"""The whole system on loopback: ``make demo``.

Starts a bundled redis-server, a Fly-like DNS server, TLS stand-in builders,
two discoverers, one xds-server and one Envoy, then shows a live status view.
State lives in ``run/demo/`` (ports, logs, certs).

    python -m tools.demo            run everything, live status until Ctrl-C
    python -m tools.demo --check    run, prove traffic flows, add a builder, exit
    python -m tools.demo add        (another terminal) add a builder, reach it through Envoy
    python -m tools.demo reach SNI  connect through Envoy with that SNI
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "run" / "demo"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

from harness.host import LOOPBACK  # noqa: E402
from harness.plane import Plane  # noqa: E402
from harness.wait import wait_until  # noqa: E402
from tools.flyzone import FlyBuilder, write_zone  # noqa: E402
from tools.tls_backend import client_context  # noqa: E402

DOMAIN = "builders.internal"
POOL = [FlyBuilder(f"{0x148ed0b1d00000 + n:014x}", "builder", f"127.0.0.{n + 1}", "ord" if n % 2 else "ams")
        for n in range(1, 9)]  # 8 stand-in builders on 127.0.0.2..9; two start in DNS
BUILDER_APP = POOL[0].app  # the discoverers' --app: only machines of this app are builders
# Fly's _instances.internal lists every machine of the org: here the control plane's own machine too,
# which is never routed because its app is not a builder app
OTHER_MACHINES = [FlyBuilder("d15c0000000001", "flyxds-discoverer", "127.0.0.10", "ord")]


class Demo:
    """The demo's plane: ports preferred as an operator would pick them, processes in their own
    session (Ctrl-C reaches the demo, which stops them in order)."""

    def __init__(self) -> None:
        self.plane: Plane | None = None
        self.state: dict = {}

    def start(self) -> None:
        if RUN.exists():
            shutil.rmtree(RUN)
        self.plane = plane = Plane(RUN, new_session=True)
        s = self.state
        redis = plane.start_redis(port=LOOPBACK.free_port(6379))
        dns = plane.start_dns(port=LOOPBACK.free_port(5353))
        s["redis_port"], s["dns_port"], s["redis_url"] = redis.port, dns.port, redis.url
        s["zone"], s["certs"] = str(dns.zone_path), str(plane.certs)
        s["in_dns"] = [b.id for b in POOL[:2]]
        self.write_zone()
        s["builder_port"] = LOOPBACK.free_port(8443)
        plane.start_builders({f"{b.id}.{DOMAIN}": (b.ip, s["builder_port"]) for b in POOL})
        for n in (1, 2):
            plane.start_discoverer("--source", "fly", "--app", BUILDER_APP, "--dns-server", dns.addr,
                                   "--builder-port", str(s["builder_port"]), "--id", f"discoverer-{n}")
        replica = plane.start_replica("--replica-id", "xds-1", port=LOOPBACK.free_port(18000), label="xds-server")
        s["ads_port"] = int(replica.target.rsplit(":", 1)[1])
        envoy = plane.start_envoy("demo-envoy", ads=replica.target, region="ord", routing=None, directory=RUN / "envoy",
                                  listener_port=LOOPBACK.free_port(10443), admin_port=LOOPBACK.free_port(9901),
                                  log_level="warning")
        s["envoy_port"], s["admin_port"] = envoy.listener_port, envoy.admin_port
        (RUN / "state.json").write_text(json.dumps(s, indent=2))
        self.wait(lambda: reach(s, f"{POOL[0].id}.{DOMAIN}") is not None, "the first builder through Envoy", 30)

    def write_zone(self) -> None:
        write_demo_zone(self.state)

    def wait(self, predicate, what: str, timeout: float = 20) -> None:
        """Until ``predicate`` holds; a clear exit when a part died or the time ran out."""
        def ready():
            self.plane.procs.check_alive()
            return predicate()
        try:
            wait_until(ready, timeout, interval=0.1, what=what, ignore=())
        except (RuntimeError, TimeoutError) as exc:
            raise SystemExit(f"{exc}; logs in {RUN / 'logs'}") from None

    def stop(self) -> None:
        if self.plane is not None:
            self.plane.close()


def load_state() -> dict:
    try:
        return json.loads((RUN / "state.json").read_text())
    except FileNotFoundError:
        raise SystemExit("no demo is running: start one with `make demo` first")


def reach(state: dict, sni: str, timeout: float = 2.0) -> str | None:
    """Connect to Envoy with ``sni``; the builder's answer, or None when refused."""
    try:
        ctx = client_context(state["certs"])
        with socket.create_connection(("127.0.0.1", state["envoy_port"]), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=sni) as tls:
                return tls.makefile("rb").readline(200).decode().strip() or None
    except (OSError, ssl.SSLError):
        return None


def write_demo_zone(state: dict) -> None:
    write_zone(state["zone"], [b for b in POOL if b.id in state["in_dns"]] + OTHER_MACHINES)


def add_builder(state: dict) -> FlyBuilder | None:
    """Put the next pool builder into DNS; returns it (None when the pool is used up)."""
    nxt = next((b for b in POOL if b.id not in state["in_dns"]), None)
    if nxt is None:
        return None
    state["in_dns"].append(nxt.id)
    write_demo_zone(state)
    (RUN / "state.json").write_text(json.dumps(state, indent=2))
    return nxt


def cmd_add() -> int:
    state = load_state()
    b = add_builder(state)
    if b is None:
        print("all 8 demo builders are already in DNS")
        return 1
    sni = f"{b.id}.{DOMAIN}"
    t0 = time.monotonic()
    print(f"added {b.id} ({b.ip}) to DNS; connecting to Envoy with SNI {sni} ...")
    while (answer := reach(state, sni, 0.5)) is None and time.monotonic() - t0 < 5:
        time.sleep(0.02)
    print(f"{answer or 'refused'}   ({(time.monotonic() - t0) * 1000:.0f} ms after the DNS change)")
    return 0 if answer else 1


def instructions(s: dict) -> str:
    a = f"{POOL[0].id}.{DOMAIN}"
    return f"""
The control plane is running on loopback (logs: {RUN / 'logs'}).
  redis      {s['redis_url']}
  DNS        127.0.0.1:{s['dns_port']}  (zone {s['zone']})
  ADS        127.0.0.1:{s['ads_port']}   Envoy listener 127.0.0.1:{s['envoy_port']}, admin 127.0.0.1:{s['admin_port']}

Builders are the machines of the Fly app '{BUILDER_APP}' (discoverer --app {BUILDER_APP}); DNS also
lists {', '.join(f"{m.id} (app {m.app})" for m in OTHER_MACHINES)}, which is never routed.
Reach a builder through Envoy by SNI:
  openssl s_client -quiet -connect 127.0.0.1:{s['envoy_port']} -servername {a} -CAfile {s['certs']}/ca.pem
  .venv/bin/python -m tools.demo reach {a}
Add a builder (another terminal) and watch the connection reach it:
  .venv/bin/python -m tools.demo add
Inspect:
  .venv/bin/xdsctl --redis-url {s['redis_url']} routes      (or status, envoys, changes --follow)
  .venv/bin/redis-cli -p {s['redis_port']} HGETALL '{{xds}}:routes'
Ctrl-C stops everything.
"""


def live_status(s: dict) -> None:
    while True:
        out = subprocess.run([str(BIN / "xdsctl"), "--redis-url", s["redis_url"], "status"],
                             capture_output=True, text=True).stdout
        sys.stdout.write("\033[2J\033[H" + instructions(s) + "\n" + out)
        sys.stdout.flush()
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", choices=("run", "add", "reach"), default="run")
    p.add_argument("sni", nargs="?")
    p.add_argument("--check", action="store_true", help="prove it works, then stop (used by the tests)")
    args = p.parse_args(argv)
    if args.command == "add":
        return cmd_add()
    if args.command == "reach":
        answer = reach(load_state(), args.sni or f"{POOL[0].id}.{DOMAIN}")
        print(answer or "refused")
        return 0 if answer else 1
    demo = Demo()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        demo.start()
        s = demo.state
        if args.check:
            for b in POOL[:2]:
                print(f"{b.id}.{DOMAIN} -> {reach(s, f'{b.id}.{DOMAIN}')}")
            for m in OTHER_MACHINES:
                print(f"{m.id}.{DOMAIN} -> {reach(s, f'{m.id}.{DOMAIN}') or 'refused'} (app {m.app}: no builder)")
            return cmd_add()
        live_status(s)
    except KeyboardInterrupt:
        pass
    finally:
        demo.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
