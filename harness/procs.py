"""Subprocesses of the harness: each one's output in its own log, each stopped in a bounded time.

``Proc`` runs a console script of this project, a Python file, or any argv, on a ``Host`` (its
argv prefix); ``ProcGroup`` is the processes of one plane or test, stopped newest first.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Sequence

from .host import LOOPBACK, Host, free_port  # noqa: F401 - free_port re-exported
from .wait import async_wait_until, wait_until  # noqa: F401 - re-exported

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PR_SET_PDEATHSIG = 1


def script(name: str) -> Path:
    """A console script of this project (or redis-server) next to the running interpreter."""
    path = BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: is the project installed in this venv?")
    return path


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
                 cwd: str | os.PathLike | None = None, *, host: Host = LOOPBACK, new_session: bool = False):
        self.name = name
        self.host = host
        self.argv = host.argv(argv)
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=full_env, cwd=cwd or REPO,
                                          preexec_fn=_die_with_parent, start_new_session=new_session)

    @classmethod
    def start(cls, name: str, args: Sequence[str], log_dir: str | os.PathLike, *, label: str | None = None,
              env: dict | None = None, **kw) -> "Proc":
        label = label or name
        return cls(label, [str(script(name)), *args], Path(log_dir) / f"{label}.log", env, **kw)

    @classmethod
    def start_python(cls, args: Sequence[str], log_dir: str | os.PathLike, *, label: str,
                     env: dict | None = None, **kw) -> "Proc":
        return cls(label, [sys.executable, *args], Path(log_dir) / f"{label}.log", env, **kw)

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
    """Processes started by one test or plane, all stopped at teardown, newest first (bounded).

    Keyword arguments (``host``, ``new_session``) go to ``Proc``.
    """

    def __init__(self, log_dir: Path, **defaults):
        self.log_dir = Path(log_dir)
        self.defaults = defaults
        self.procs: list[Proc] = []

    def start(self, name: str, args: Sequence[str], *, label: str | None = None, env: dict | None = None,
              **kw) -> Proc:
        return self.add(Proc.start(name, args, self.log_dir, label=label, env=env, **{**self.defaults, **kw}))

    def start_python(self, args: Sequence[str], *, label: str, env: dict | None = None, **kw) -> Proc:
        return self.add(Proc.start_python(args, self.log_dir, label=label, env=env, **{**self.defaults, **kw}))

    def add(self, proc: Proc) -> Proc:
        """Stop ``proc`` with the group (e.g. an Envoy's process)."""
        self.procs.append(proc)
        return proc

    def remove(self, proc: Proc) -> None:
        """Stop ``proc`` now and forget it (a part replaced mid-run)."""
        proc.stop()
        self.procs.remove(proc)

    def check_alive(self) -> None:
        """Raise RuntimeError naming the first process that exited (with its log's tail)."""
        for proc in self.procs:
            if not proc.alive:
                raise RuntimeError(f"{proc.name} exited with {proc.returncode}; see {proc.log_path}:\n{proc.tail(10)}")

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"----- {p.name} ({p.log_path}) -----\n{p.tail(60)}" for p in self.procs)
