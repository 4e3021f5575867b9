"""The Grafana dashboard (deploy/grafana/): its committed JSON is what the code builds, and every
metric a panel queries is exported by a running plane."""
from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.grafana import dashboard
from tests.support.monitoring import start_metrics_plane
from tests.support.procs import REPO

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count"),
            "gauge": ("",)}


def test_the_committed_json_is_what_the_code_builds():
    done = subprocess.run([sys.executable, "-m", "deploy.grafana", "--check"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert dashboard.JSON_PATH.read_text() == dashboard.render()


def exposed(target: str) -> set[str]:
    """Every sample name a /metrics page offers, including families that have no sample yet."""
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=3) as r:
        families = text_string_to_metric_families(r.read().decode())
    return {f.name + suffix for f in families for suffix in SUFFIXES.get(f.type, ("",))}


@pytest.mark.e2e
def test_every_panel_queries_a_metric_the_plane_exports(tmp_path, redis_server, procs):
    plane = start_metrics_plane(tmp_path, procs, redis_server.url, discoverers=1)
    names = set().union(*(exposed(t) for hosts in plane["targets"].values() for t in hosts))
    assert "discoverer_is_leader" in names and "xds_nacks_total" in names, sorted(names)
    queried = dashboard.metrics()
    assert len(queried) > 15
    assert queried <= names, f"panels query metrics no process exports: {sorted(queried - names)}"
