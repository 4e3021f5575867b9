"""`make demo`'s program, as a new user runs it: everything starts, builders are reachable, one is added."""
from __future__ import annotations

import subprocess
import sys

import pytest

from harness.procs import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_demo_check_runs_the_whole_system():
    run = subprocess.run([sys.executable, "-m", "tools.demo", "--check"], cwd=REPO, capture_output=True,
                         text=True, timeout=110)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    reached = [line for line in lines if "-> builder=" in line]
    assert len(reached) == 2, run.stdout
    assert any(line.startswith("builder=") and "ms after the DNS change" in line for line in lines), run.stdout
