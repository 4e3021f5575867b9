"""tools/dns_server.py as a subprocess, fed through a zone file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from tools.flyzone import write_zone

from .host import LOOPBACK, Host
from .procs import REPO, Proc
from .wait import wait_until

SERVER = REPO / "tools" / "dns_server.py"


class DnsProcess:
    """A Fly-like DNS server on the host's address (UDP and TCP on ``port``; 0 picks one).

    ``set_builders`` and ``set_mode`` rewrite the zone atomically; the server
    sees the change at its next query.
    """

    def __init__(self, directory: str | os.PathLike, *, host: Host = LOOPBACK, port: int = 0,
                 args: Sequence[str] = (), **proc_kw):
        self.host = host
        self.args = list(args)  # more flags for tools/dns_server.py (e.g. --log-level warning)
        self.proc_kw = proc_kw  # for Proc (new_session)
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.zone_path = self.dir / "zone.json"
        self.port_file = self.dir / "dns.port"
        self.port = port
        self.proc: Proc | None = None
        self.builders: list = []
        self.mode = "ok"
        self.layout = "joined"
        self.extra: dict | None = None
        self._write()

    @property
    def addr(self) -> str:
        return self.host.hostport(self.port)

    def _write(self) -> None:
        write_zone(self.zone_path, self.builders, mode=self.mode, layout=self.layout, extra=self.extra)

    def set_builders(self, builders: Iterable, *, layout: str | None = None, extra: dict | None = None) -> None:
        """Builders as (id, app, ip, region) tuples, dicts or FlyBuilder."""
        self.builders = list(builders)
        if layout is not None:
            self.layout = layout
        if extra is not None:
            self.extra = extra
        self._write()

    def set_mode(self, mode: str) -> None:
        """'ok', 'servfail', 'empty' or 'drop' (never answers)."""
        self.mode = mode
        self._write()

    def start(self) -> None:
        """Start (again); a restart asks for the same port."""
        if self.proc is not None and self.proc.alive:
            return
        self.port_file.unlink(missing_ok=True)
        self.proc = Proc.start_python([str(SERVER), "--listen", self.addr, "--zone", str(self.zone_path),
                                       "--port-file", str(self.port_file), *self.args], self.dir, label="dns",
                                      host=self.host, **self.proc_kw)
        try:
            port = wait_until(self._bound_port, 10, what="tools/dns_server.py bound")
        except TimeoutError as exc:
            raise RuntimeError(f"DNS server did not start: {self.proc.tail()}") from exc
        self.port = port

    def _bound_port(self) -> int:
        if self.proc is not None and not self.proc.alive:
            raise RuntimeError(f"DNS server exited: {self.proc.tail()}")
        text = self.port_file.read_text().strip() if self.port_file.exists() else ""
        return int(text) if text else 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
