"""The Grafana dashboard (deploy/grafana/): its committed JSON is what the code builds, and every
metric a panel queries is exported by a running plane."""
from __future__ import annotations

import subprocess
import sys

import pytest

from deploy.grafana import dashboard
from harness.procs import REPO
from tests.support.monitoring import exported, start_metrics_plane


def test_the_committed_json_is_what_the_code_builds():
    done = subprocess.run([sys.executable, "-m", "deploy.grafana", "--check"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert dashboard.JSON_PATH.read_text() == dashboard.render()


@pytest.mark.e2e
def test_every_panel_queries_a_metric_the_plane_exports(tmp_path, redis_server, procs):
    plane = start_metrics_plane(tmp_path, procs, redis_server.url, discoverers=1)
    names = exported(plane)
    assert "discoverer_is_leader" in names and "xds_nacks_total" in names, sorted(names)
    queried = dashboard.metrics()
    assert len(queried) > 15
    assert queried <= names, f"panels query metrics no process exports: {sorted(queried - names)}"
