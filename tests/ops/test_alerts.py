"""The alert rules (deploy/prometheus/): promtool checks them and runs their unit tests, and a real
Prometheus scraping a running plane fires FlyxdsNoLeader once every discoverer is stopped."""
from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from harness.procs import wait_until
from tests.support.monitoring import RULE_TESTS, RULES, Prometheus, exported, start_metrics_plane, tool

def test_promtool_checks_the_rules():
    done = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_promtool_unit_tests_of_the_rules():
    done = subprocess.run([tool("promtool"), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_prometheus_fires_no_leader_when_every_discoverer_stops(tmp_path, redis_server, procs):
    plane = start_metrics_plane(tmp_path, procs, redis_server.url)
    rules = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    queried = {m for expr in rules for m in re.findall(r"\b(?:discoverer|xds)_[a-z_]+\b", expr)}
    missing = queried - exported(plane)
    assert len(queried) > 10 and not missing, f"rules name metrics no process exports: {sorted(missing)}"
    prom = Prometheus(tmp_path / "prometheus", plane["targets"]).start(procs)
    wait_until(lambda: prom.value("sum(discoverer_is_leader)") == 1, 30, what="Prometheus sees one leader")
    wait_until(lambda: prom.value("count(up == 1)") == 3, 30, what="every target scraped")
    # the rule is evaluated and false while a discoverer leads (before the first scrape it was pending)
    wait_until(lambda: prom.rule_state("FlyxdsNoLeader") == "inactive", 30, what="FlyxdsNoLeader inactive")
    for proc in plane["discoverer"]:
        proc.stop()
    wait_until(lambda: "FlyxdsNoLeader" in prom.alerts("firing"), 60, interval=0.5, what="FlyxdsNoLeader firing")
