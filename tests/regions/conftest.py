"""The regions lab (harness/regions.py) for the tests of issue 20: namespaces need root and ``ip``."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time

import pytest

from harness.envoy import tls_reach
from harness.plane import sni
from harness.regions import Lab, LabSpec


def lab_or_skip(tmp_path, spec: LabSpec = LabSpec()) -> Lab:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("the regions lab needs root and iproute2 (ip netns); CI runs as root")
    return Lab(tmp_path / "lab", spec).start()


@pytest.fixture
def lab(tmp_path, request):
    lab = lab_or_skip(tmp_path)
    try:
        yield lab
    finally:
        failed = getattr(request.node, "rep_call", None)
        lab.close()
        if failed is not None and failed.failed:
            print(lab.plane.logs())


def run_in(lab: Lab, region: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """A command in ``region``'s namespace."""
    return subprocess.run(lab.hosts[region].argv(argv), capture_output=True, text=True, timeout=timeout)


def routes(envoy) -> set[str]:
    return envoy.clusters()


class Prober:
    """Connects through one Envoy to each of ``builders`` again and again (a random pause between
    rounds, so it never phase-locks with a poller) until stopped; counts what failed."""

    def __init__(self, envoy, builders: list[str], ctx):
        self.envoy, self.builders, self.ctx = envoy, builders, ctx
        self.ok, self.failed = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for bid in self.builders:
                got = tls_reach(self.envoy.listener_port, sni(bid), self.ctx, host=self.envoy.host.address)
                if got == sni(bid):
                    self.ok += 1
                else:
                    self.failed.append((time.time(), bid, str(got)))
            self._stop.wait(random.uniform(0.01, 0.05))

    def __enter__(self) -> "Prober":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
