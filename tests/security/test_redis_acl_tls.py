"""Redis with ACL users and TLS: each service with only the rights deploy/redis-acl.conf grants.

Needs Debian's redis-server 7 (TLS and %R~ key permissions); .ci/run installs it.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import redis

from tests.support.procs import REPO, free_port, script, wait_until
from tools.tls_backend import ensure_certs

REDIS7 = Path("/usr/bin/redis-server")
pytestmark = [pytest.mark.skipif(not REDIS7.exists(), reason="Debian's redis-server 7 is not installed"),
              pytest.mark.timeout(90)]
PASSWORDS = {"discoverer": "disc-s3cret-pw", "xds": "xds-s3cret-pw", "xdsctl": "ctl-s3cret-pw"}


@pytest.fixture
def secure_redis(tmp_path):
    certs = ensure_certs(tmp_path / "certs", "localhost")
    acl = (REPO / "deploy" / "redis-acl.conf").read_text()
    lines = [line for line in acl.splitlines() if line.startswith("user ")]
    users = [line.replace(">CHANGE-ME", ">" + PASSWORDS[line.split()[1]]) for line in lines]
    port = free_port()
    conf = tmp_path / "redis.conf"
    conf.write_text("\n".join([
        "port 0", f"tls-port {port}", "bind 127.0.0.1", f"tls-cert-file {certs.cert}", f"tls-key-file {certs.key}",
        f"tls-ca-cert-file {certs.ca}", "tls-auth-clients no", "save ''", "appendonly no", f"dir {tmp_path}",
        "user default off", *users]) + "\n")
    proc = subprocess.Popen([str(REDIS7), str(conf)], stdout=open(tmp_path / "redis.log", "wb"),
                            stderr=subprocess.STDOUT)

    def url(user: str) -> str:
        return f"rediss://{user}:{PASSWORDS[user]}@localhost:{port}/0?ssl_ca_certs={certs.ca}"

    def client(user: str) -> redis.Redis:
        return redis.Redis.from_url(url(user), socket_timeout=2)

    wait_until(lambda: client("xdsctl").ping(), 10, what="TLS redis")
    try:
        yield url, client
    finally:
        proc.terminate()
        proc.wait(5)


def test_services_run_with_least_privilege_over_tls(tmp_path, secure_redis, procs):
    url, client = secure_redis
    builders = tmp_path / "b.json"
    builders.write_text(json.dumps([{"id": "a0000000000001", "app": "builder", "region": "ord", "ip": "127.0.0.2"}]))
    disc = procs.start("discoverer", ["--redis-url", url("discoverer"), "--source", "file", "--file", str(builders)])
    ads = free_port()
    xds = procs.start("xds-server", ["--redis-url", url("xds"), "--listen", f"127.0.0.1:{ads}", "--replica-id", "r1"])
    wait_until(lambda: client("xdsctl").hget("{xds}:routes", "a0000000000001.builders.internal"), 10)
    # the replica follows the change stream and writes its status with its own (ACL-limited) user
    wait_until(lambda: json.loads(client("xdsctl").hget("{xds}:replicas", "r1") or "{}").get("version") == 1, 10,
               what="replica at version 1, status written")
    ctl = subprocess.run([str(script("xdsctl")), "--redis-url", url("xdsctl"), "--json", "routes"],
                         capture_output=True, text=True, timeout=30)
    assert json.loads(ctl.stdout)["routes"] == {"a0000000000001.builders.internal": "127.0.0.2:443"}
    for proc, user in ((disc, "discoverer"), (xds, "xds")):
        assert PASSWORDS[user] not in proc.log()
        assert f"{user}:***@" in proc.log(), "the Redis URL is logged, redacted"


def test_the_replica_user_cannot_touch_the_builder_set(secure_redis):
    _, client = secure_redis
    xds = client("xds")
    for attempt in (lambda: xds.hset("{xds}:builders", "x", "{}"), lambda: xds.set("{xds}:version", 99),
                    lambda: xds.xadd("{xds}:changes", {"version": 1}), lambda: xds.set("{xds}:leader", "me"),
                    lambda: xds.eval("return 1", 0), lambda: xds.get("other:key"),
                    lambda: xds.execute_command("CLIENT", "KILL", "TYPE", "normal"),
                    lambda: xds.execute_command("CLIENT", "PAUSE", "10")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    xds.hset("{xds}:envoys", "n", "{}")  # its own status: allowed
    ctl = client("xdsctl")
    with pytest.raises(redis.exceptions.NoPermissionError):
        ctl.hset("{xds}:envoys", "n", "{}")
