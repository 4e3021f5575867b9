"""Ports, polling and subprocesses for tests. Everything here is bounded in time."""
from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Awaitable, Callable, Sequence

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PR_SET_PDEATHSIG = 1


def script(name: str) -> Path:
    """A console script of this project (or redis-server) next to the running interpreter."""
    path = BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: is the project installed in this venv?")
    return path


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port that was free a moment ago (the caller must bind soon, or retry)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def scrape(port: int, host: str = "127.0.0.1") -> dict[str, float]:
    """A Prometheus /metrics page: sample (with labels) -> value."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=3) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02,
               what: str | None = None):
    """Poll ``predicate`` until it returns something truthy; that value is returned.

    Exceptions from the predicate count as "not yet"; the last one is chained to the
    TimeoutError raised after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last_exc = None
        except Exception as exc:  # noqa: BLE001 - "not ready yet"
            last_exc = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what or getattr(predicate, '__name__', 'condition')} "
                               f"not true after {timeout:.1f}s") from last_exc
        time.sleep(interval)


async def async_wait_until(predicate: Callable[[], Awaitable[object]], timeout: float = 5.0,
                           interval: float = 0.02, what: str | None = None):
    """``wait_until`` for an async predicate."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = await predicate()
            if value:
                return value
            last_exc = None
        except Exception as exc:  # noqa: BLE001
            last_exc = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what or 'condition'} not true after {timeout:.1f}s") from last_exc
        await asyncio.sleep(interval)


def _die_with_parent() -> None:
    """In the child: get SIGKILL if the test runner dies, so nothing outlives it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class Proc:
    """A subprocess whose stdout and stderr go to one log file.

    ``Proc.start("discoverer", [...], log_dir)`` runs the console script next to
    sys.executable; ``Proc.start_python(["tools/dns_server.py", ...])`` runs a file
    with this interpreter. ``stop()`` is safe to call twice.
    """

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict | None = None,
                 cwd: str | os.PathLike | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=full_env, cwd=cwd or REPO,
                                          preexec_fn=_die_with_parent)

    @classmethod
    def start(cls, name: str, args: Sequence[str], log_dir: str | os.PathLike, *, label: str | None = None,
              env: dict | None = None) -> "Proc":
        label = label or name
        return cls(label, [str(script(name)), *args], Path(log_dir) / f"{label}.log", env)

    @classmethod
    def start_python(cls, args: Sequence[str], log_dir: str | os.PathLike, *, label: str,
                     env: dict | None = None) -> "Proc":
        return cls(label, [sys.executable, *args], Path(log_dir) / f"{label}.log", env)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive:
            os.kill(self.popen.pid, sig)

    def wait(self, timeout: float = 5.0) -> int:
        """The exit code; raises TimeoutError when still running after ``timeout``."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"{self.name} (pid {self.pid}) still running after {timeout}s") from exc

    def stop(self, timeout: float = 3.0) -> int | None:
        """SIGCONT + SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.alive:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                self.kill(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait(5)
        return self.popen.poll()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_has(self, text: str) -> bool:
        return text in self.log()

    def wait_for_log(self, text: str, timeout: float = 5.0) -> None:
        wait_until(lambda: self.log_has(text), timeout, what=f"{text!r} in {self.name}'s log")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"Proc({self.name}, pid={self.pid}, rc={self.returncode})"


class ProcGroup:
    """Processes started by one test, all stopped at teardown (bounded)."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.procs: list[Proc] = []

    def start(self, name: str, args: Sequence[str], *, label: str | None = None, env: dict | None = None) -> Proc:
        proc = Proc.start(name, args, self.log_dir, label=label, env=env)
        self.procs.append(proc)
        return proc

    def start_python(self, args: Sequence[str], *, label: str, env: dict | None = None) -> Proc:
        proc = Proc.start_python(args, self.log_dir, label=label, env=env)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"----- {p.name} ({p.log_path}) -----\n{p.tail(60)}" for p in self.procs)
