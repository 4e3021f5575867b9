"""Redis 7 loading exactly deploy/redis.acl, with passwords added by deploy/redis-users.sh, over TLS.

Each service runs with its own user and only its rights; the default user is off, so a
client that does not authenticate is refused. Needs Debian's redis-server 7 (TLS and
%R~/%W~ key permissions); .ci/run installs it.
"""
from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
import redis

from harness.envoy import REFUSED, EnvoyProc, insecure_context, start_backends, tls_reach
from harness.procs import free_port, script, wait_until
from shared.keys import Keys
from tests.support.redis_acl import ACL_FILE, PASSWORDS, with_passwords
from tools.tls_backend import client_context

from .conftest import needs_redis7

pytestmark = [needs_redis7, pytest.mark.timeout(120)]
KEYS = Keys()
BUILDER = "a0000000000001"
SNI = f"{BUILDER}.builders.internal"


def test_the_shipped_file_has_no_password_and_keeps_the_default_user_off():
    lines = ACL_FILE.read_text().splitlines()
    assert all(line.startswith("user ") for line in lines), "Redis 7 refuses any other line in an aclfile"
    users = {line.split()[1]: line.split()[2:] for line in lines}
    assert users["default"] == ["reset", "off"]
    assert set(users) == {"default", *PASSWORDS}
    assert not any(w[0] in ">#<" or w == "nopass" for rules in users.values() for w in rules), \
        "no password ships: a user nobody gave one cannot log in"


def test_passwords_are_added_as_hashes_and_a_missing_one_leaves_the_user_locked():
    run = with_passwords(ACL_FILE, {"REDIS_XDS_PASSWORD": "xds-s3cret-pw"})
    assert "xds-s3cret-pw" not in run.stdout
    xds = next(line for line in run.stdout.splitlines() if line.startswith("user xds "))
    assert xds.endswith(" #" + hashlib.sha256(b"xds-s3cret-pw").hexdigest())
    assert "REDIS_DISCOVERER_PASSWORD is not set" in run.stderr
    discoverer = next(line for line in run.stdout.splitlines() if line.startswith("user discoverer "))
    assert "#" not in discoverer and ">" not in discoverer


def test_services_run_end_to_end_with_their_users_over_tls(tmp_path, secure_redis, procs):
    url, client = secure_redis
    port = free_port("127.0.0.2")
    start_backends(procs, tmp_path / "certs-builders", {SNI: ("127.0.0.2", port)})
    builders = tmp_path / "b.json"
    builders.write_text(json.dumps([{"id": BUILDER, "app": "builder", "region": "ord", "ip": "127.0.0.2"}]))
    disc = procs.start("discoverer", ["--redis-url", url("discoverer"), "--source", "file", "--file", str(builders),
                                      "--builder-port", str(port)])
    ads = free_port()
    xds = procs.start("xds-server", ["--redis-url", url("xds"), "--listen", f"127.0.0.1:{ads}", "--replica-id", "r1"])
    envoy = EnvoyProc(tmp_path / "envoy", node_id="edge-1", ads=f"127.0.0.1:{ads}")
    procs.procs.append(envoy.start().proc)
    ctx = client_context(tmp_path / "certs-builders")
    wait_until(lambda: tls_reach(envoy.listener_port, SNI, ctx) == SNI, 20, what="the builder through Envoy")
    assert tls_reach(envoy.listener_port, "nobody00000000.builders.internal", insecure_context()) is REFUSED
    # the replica follows the change stream and writes its status (and Envoy's) with its own ACL-limited user
    wait_until(lambda: json.loads(client("xdsctl").hget(KEYS.envoys, "edge-1") or "{}").get("replica") == "r1", 10,
               what="Envoy's status written by the replica")
    ctl = subprocess.run([str(script("xdsctl")), "--redis-url", url("xdsctl"), "--json", "routes"],
                         capture_output=True, text=True, timeout=30)
    assert json.loads(ctl.stdout)["routes"] == {SNI: f"127.0.0.2:{port}"}, ctl.stderr
    status = subprocess.run([str(script("xdsctl")), "--redis-url", url("xdsctl"), "status"],
                            capture_output=True, text=True, timeout=30)
    assert status.returncode == 0 and "1 in sync" in status.stdout, status.stdout + status.stderr
    for proc, user in ((disc, "discoverer"), (xds, "xds")):
        assert PASSWORDS[user] not in proc.log()
        assert f"{user}:***@" in proc.log(), "the Redis URL is logged, redacted"
        assert "NOPERM" not in proc.log(), f"{user} was refused something it needs"


def test_a_client_that_does_not_authenticate_is_refused(secure_redis):
    _, client = secure_redis
    anonymous = client(None)
    for attempt in (anonymous.ping, anonymous.dbsize, lambda: anonymous.hgetall(KEYS.builders)):
        with pytest.raises(redis.exceptions.AuthenticationError):
            attempt()
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.execute_command("AUTH", "default", "")
    users = client("admin").acl_list()
    assert [u for u in users if u.startswith("user default ")] == ["user default off sanitize-payload resetchannels -@all"]


def test_the_replica_user_cannot_touch_the_builder_set(secure_redis):
    _, client = secure_redis
    xds = client("xds")
    for attempt in (lambda: xds.hset(KEYS.builders, "x", "{}"), lambda: xds.set(KEYS.version, 99),
                    lambda: xds.xadd(KEYS.changes, {"version": 1}), lambda: xds.set(KEYS.leader, "me"),
                    lambda: xds.eval("return 1", 0), lambda: xds.get("other:key"),
                    lambda: xds.execute_command("CLIENT", "KILL", "TYPE", "normal"),
                    lambda: xds.execute_command("CLIENT", "PAUSE", "10")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    xds.hset(KEYS.envoys, "n", "{}")  # its own status: allowed
    ctl = client("xdsctl")
    with pytest.raises(redis.exceptions.NoPermissionError):
        ctl.hset(KEYS.envoys, "n", "{}")


def test_the_provisioner_appends_intents_and_writes_nothing_else(secure_redis):
    _, client = secure_redis
    admin, prov = client("admin"), client("provisioner")
    admin.hset(KEYS.builders, BUILDER, "{}")
    admin.set(KEYS.version, 7)
    admin.set(KEYS.outcome("req-1"), '{"ok": true}')
    assert prov.xadd(KEYS.intents, {"op": "register", "id": "b0000000000002", "request": "req-1"},
                     maxlen=1000, approximate=True)
    with prov.pipeline(transaction=True) as pipe:  # what `xdsctl register --wait` reads
        pipe.get(KEYS.version).hget(KEYS.builders, BUILDER).hgetall(KEYS.envoys).hgetall(KEYS.replicas)
        pipe.get(KEYS.outcome("req-1"))
        assert pipe.execute() == [b"7", b"{}", {}, {}, b'{"ok": true}']
    for attempt in (lambda: prov.hset(KEYS.builders, "x", "{}"), lambda: prov.hdel(KEYS.builders, BUILDER),
                    lambda: prov.delete(KEYS.builders), lambda: prov.delete(KEYS.intents),
                    lambda: prov.xtrim(KEYS.intents, 0), lambda: prov.xdel(KEYS.intents, "0-1"),
                    lambda: prov.set(KEYS.version, 8), lambda: prov.set(KEYS.outcome("req-1"), "forged"),
                    lambda: prov.xadd(KEYS.changes, {"version": 8}), lambda: prov.xrange(KEYS.intents),
                    lambda: prov.get(KEYS.leader), lambda: prov.eval("return 1", 0), lambda: prov.flushall(),
                    lambda: prov.get("other:key")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    assert admin.hlen(KEYS.builders) == 1 and admin.get(KEYS.version) == b"7"
