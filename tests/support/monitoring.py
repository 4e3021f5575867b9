"""A plane whose services export metrics, and a real Prometheus (Debian's package) scraping it.

``start_metrics_plane`` starts discoverers (file source) and one xds-server, each with
``--metrics-listen``; ``Prometheus`` runs /usr/bin/prometheus on 127.0.0.1 with a temporary
config and data directory, 1 s scrape and rule intervals, and answers from its HTTP API.
"""
from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.host import free_port
from harness.plane import Plane
from harness.procs import REPO, Proc, ProcGroup
from harness.wait import wait_until

RULES = REPO / "deploy" / "prometheus" / "flyxds.rules.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "flyxds.rules.test.yml"


def tool(name: str) -> str:
    """/usr/bin/promtool or prometheus; skipped when absent outside CI (.ci/run installs them), failed under CI."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing: .ci/run installs Debian's prometheus package")
        pytest.skip(f"{name} not installed (apt-get install prometheus)")
    return path


def start_metrics_plane(tmp: Path, procs: ProcGroup, redis_url: str, *, discoverers: int = 2) -> dict[str, list]:
    """{"discoverer": [Proc...], "xds-server": [Proc], "targets": {job: ["127.0.0.1:PORT", ...]}}: a
    ``harness.plane.Plane`` on the test's fixtures, each service with ``--metrics-listen``."""
    builders = tmp / "builders.json"
    builders.write_text(json.dumps([{"id": "a0000000000001", "app": "builder", "region": "ord", "ip": "127.0.0.2",
                                     "port": 8443}]))
    plane = Plane(tmp, procs=procs, redis_url=redis_url)
    out: dict = {"discoverer": [], "xds-server": [], "targets": {"discoverer": [], "xds-server": []}}
    for n in range(discoverers):
        metrics = plane.host().hostport(free_port())
        out["discoverer"].append(plane.start_discoverer("--source", "file", "--file", str(builders), "--id", f"d{n + 1}",
                                                        "--metrics-listen", metrics, label=f"discoverer-{n + 1}"))
        out["targets"]["discoverer"].append(metrics)
    metrics = plane.host().hostport(free_port())
    out["xds-server"].append(plane.start_replica("--metrics-listen", metrics, label="xds").proc)
    out["targets"]["xds-server"].append(metrics)
    for target in out["targets"]["discoverer"] + out["targets"]["xds-server"]:
        wait_until(lambda: _get(f"http://{target}/metrics"), 20, what=f"metrics on {target}")
    return out


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def exported(plane: dict) -> set[str]:
    """Every sample name the plane's /metrics pages offer, including families without a sample yet."""
    names = set()
    for target in (t for hosts in plane["targets"].values() for t in hosts):
        for family in text_string_to_metric_families(_get(f"http://{target}/metrics")):
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as r:
        return r.read().decode()


class Prometheus:
    def __init__(self, directory: Path, targets: dict[str, list[str]]):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
                  "rule_files": [str(RULES)],
                  "scrape_configs": [{"job_name": job, "static_configs": [{"targets": hosts}]}
                                     for job, hosts in targets.items()]}
        (self.dir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.proc: Proc | None = None

    def start(self, procs: ProcGroup) -> "Prometheus":
        argv = [tool("prometheus"), f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"]
        self.proc = Proc("prometheus", argv, self.dir / "prometheus.log")
        procs.procs.append(self.proc)
        wait_until(lambda: _get(f"http://127.0.0.1:{self.port}/-/ready"), 30, what="prometheus ready")
        return self

    def api(self, path: str) -> dict:
        return json.loads(_get(f"http://127.0.0.1:{self.port}/api/v1/{path}"))["data"]

    def value(self, query: str) -> float | None:
        result = self.api("query?query=" + urllib.request.quote(query))["result"]
        return float(result[0]["value"][1]) if result else None

    def alerts(self, state: str = "firing") -> set[str]:
        return {a["labels"]["alertname"] for a in self.api("alerts")["alerts"] if a["state"] == state}

    def rule_state(self, alert: str) -> str | None:
        """"inactive", "pending" or "firing", once the rule has been evaluated without error."""
        for group in self.api("rules")["groups"]:
            for rule in group["rules"]:
                if rule.get("name") == alert and rule.get("health") == "ok":
                    return rule.get("state")
        return None
