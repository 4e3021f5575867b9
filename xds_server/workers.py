"""``xds-server --workers N``: N replica processes on one port, and the port check every replica makes.

The supervisor (this module's ``Supervisor``) starts N workers, each the
same ``xds-server`` command run as a complete, stateless replica (its own
Redis clients, follower, status entry, gRPC server) that binds the shared
port with SO_REUSEPORT: the kernel spreads new connections across them. It
forwards SIGTERM to all of them and waits for their graceful stop; a worker
that dies is started again after a backoff, and its Envoys reconnect to the
others in the meantime (their config stays as it was, so no connection
through them drops). Health is per worker: a health check lands on one.

    supervisor (no port, no Redis)
      |-- worker 0: Replica, grpc.so_reuseport=1 --\\
      |-- worker 1: Replica, grpc.so_reuseport=1 ----> one listening port
      `-- ...

A replica refuses a port on which another process is listening (exit 2), so
two unrelated replicas never split a fleet between them; the workers of one
supervisor are told (``WORKER_ENV``) that they share it on purpose.
Connections in TIME_WAIT from a previous process on the port do not count.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import signal
import socket
import sys
import time

from shared.errors import ConfigError
from shared.addr import join_hostport, parse_hostport

log = logging.getLogger(__name__)

WORKER_ENV = "XDS_WORKER_OF"  # set by the supervisor: "<host>:<supervisor pid>/<index>"
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 0.5, 30.0, 60.0  # seconds
STOP_GRACE = 10.0  # a worker not stopped this long after SIGTERM is killed


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), for ``--workers auto``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_of() -> tuple[str, int] | None:
    """(supervisor id, worker index) when this process is a worker; None otherwise."""
    value = os.environ.get(WORKER_ENV)
    if not value:
        return None
    group, _, index = value.rpartition("/")
    return group, int(index)


def ensure_port_free(listen: str) -> None:
    """ConfigError when another process listens on ``listen`` (any address it resolves to).

    A bind with SO_REUSEADDR and without SO_REUSEPORT fails exactly when a socket
    listens on a conflicting address (0.0.0.0 and [::] conflict with every address);
    sockets in TIME_WAIT do not stop it.
    """
    host, port = parse_hostport(listen, any_port=True)
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return  # gRPC reports an address it cannot resolve
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigError(f"--listen {listen}: another process is listening on port {port}; "
                                      "not sharing it (stop that process or choose another port)") from None
                # another problem with the address (not local, no IPv6): gRPC reports it


def free_port(listen: str) -> str:
    """``listen`` with port 0 replaced by a free port (every worker must bind the same one)."""
    host, port = parse_hostport(listen, any_port=True)
    if port:
        return listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    return join_hostport(host, port)


def _die_with_supervisor() -> None:
    """In a worker: SIGTERM (a graceful stop) when the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    """Starts ``count`` workers with ``argv`` (the supervisor's own flags) and keeps them running."""

    def __init__(self, count: int, argv: list[str], listen: str, metrics_listen: str | None = None):
        self.count = count
        self.argv = list(argv)
        self.listen = listen
        self.metrics_listen = metrics_listen
        self.group = f"{socket.gethostname()}:{os.getpid()}"
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = False

    async def run(self, stop: asyncio.Event) -> None:
        if sys.platform != "linux":
            raise ConfigError("--workers needs Linux (SO_REUSEPORT spreading connections across processes)")
        log.info("supervisor %s: %d workers sharing %s", self.group, self.count, self.listen)
        async with asyncio.TaskGroup() as tg:
            keepers = [tg.create_task(self._keep(i)) for i in range(self.count)]
            await stop.wait()
            log.info("stopping %d workers (SIGTERM), waiting for their graceful stop", len(self.procs))
            self._stopping = True
            await self._stop_all()
            for task in keepers:
                task.cancel()
        log.info("supervisor stopped")

    def _worker_argv(self, index: int) -> list[str]:
        extra = ["--listen", self.listen]
        if self.metrics_listen:
            host, port = parse_hostport(self.metrics_listen, default_host="127.0.0.1", any_port=True)
            extra += ["--metrics-listen", join_hostport(host, port + index if port else 0)]
        return [sys.executable, "-m", "xds_server.main", *self.argv, *extra]

    async def _keep(self, index: int) -> None:
        """Run worker ``index``; when it dies, start it again after a backoff (reset once it ran a while)."""
        backoff = BACKOFF_FIRST
        while not self._stopping:
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *self._worker_argv(index), env={**os.environ, WORKER_ENV: f"{self.group}/{index}"},
                stdin=asyncio.subprocess.DEVNULL, preexec_fn=_die_with_supervisor)
            self.procs[index] = proc
            log.info("worker %d started (pid %d)", index, proc.pid)
            code = await proc.wait()
            if self._stopping:
                return
            backoff = BACKOFF_FIRST if time.monotonic() - started > STABLE_AFTER else backoff
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            log.error("worker %d (pid %d) died (%s): its Envoys reconnect to the other workers; "
                      "starting it again in %.1f s", index, proc.pid, how, backoff)
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)

    async def _stop_all(self) -> None:
        running = [p for p in self.procs.values() if p.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_GRACE):
                await asyncio.gather(*(p.wait() for p in running))
        except TimeoutError:
            for proc in running:
                if proc.returncode is None:
                    log.error("worker pid %d did not stop within %.0f s; killing it", proc.pid, STOP_GRACE)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in running))
