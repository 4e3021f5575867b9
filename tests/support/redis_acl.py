"""Redis 7 over TLS loading exactly deploy/redis.acl, with passwords added by deploy/redis-users.sh.

``acl_redis(directory)`` yields ``(url, client)``: ``url(user)`` is the rediss:// URL of one
of the shipped users (None: no credentials), ``client(user)`` a redis-py client with it.
Needs Debian's redis-server 7 (TLS and %R~/%W~ key permissions); .ci/run installs it.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import redis

from harness.procs import REPO, free_port, wait_until
from tools.tls_backend import ensure_certs

REDIS7 = Path("/usr/bin/redis-server")
ACL_FILE = REPO / "deploy" / "redis.acl"
ADD_PASSWORDS = REPO / "deploy" / "redis-users.sh"
PASSWORDS = {"discoverer": "disc-s3cret-pw", "xds": "xds-s3cret-pw", "xdsctl": "ctl-s3cret-pw",
             "provisioner": "prov-s3cret-pw", "admin": "adm-s3cret-pw"}


def with_passwords(acl: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """deploy/redis-users.sh over ``acl`` with REDIS_<USER>_PASSWORD from ``env``, as the docs run it."""
    with open(acl) as stdin:
        return subprocess.run(["sh", str(ADD_PASSWORDS)], stdin=stdin, capture_output=True, text=True, timeout=10,
                              env={"PATH": os.environ["PATH"], **env}, check=True)


@contextlib.contextmanager
def acl_redis(directory: Path) -> Iterator[tuple[Callable[[str | None], str], Callable[[str | None], redis.Redis]]]:
    certs = ensure_certs(directory / "certs", "localhost")
    acl = directory / "users.acl"
    acl.write_text(with_passwords(ACL_FILE, {f"REDIS_{u.upper()}_PASSWORD": pw for u, pw in PASSWORDS.items()}).stdout)
    port = free_port()
    conf = directory / "redis.conf"
    conf.write_text("\n".join([
        "port 0", f"tls-port {port}", "bind 127.0.0.1", f"tls-cert-file {certs.cert}", f"tls-key-file {certs.key}",
        f"tls-ca-cert-file {certs.ca}", "tls-auth-clients no", "save ''", "appendonly no", f"dir {directory}"]) + "\n")
    log = directory / "redis.log"
    proc = subprocess.Popen([str(REDIS7), str(conf), "--aclfile", str(acl)], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT)

    def url(user: str | None) -> str:
        auth = f"{user}:{PASSWORDS[user]}@" if user else ""
        return f"rediss://{auth}localhost:{port}/0?ssl_ca_certs={certs.ca}"

    def client(user: str | None) -> redis.Redis:
        return redis.Redis.from_url(url(user), socket_timeout=2)

    try:
        wait_until(lambda: proc.poll() is None and client("xdsctl").ping(), 10, what="TLS redis with the ACL file")
    except TimeoutError as exc:
        raise RuntimeError(f"redis-server did not start: {log.read_text()[-2000:]}") from exc
    try:
        yield url, client
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
