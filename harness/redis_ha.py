"""Redis Cluster and Redis Sentinel out of Debian's redis-server 7, on 127.0.0.1.

- ``ClusterProcs``: 3 masters with one replica each (``--cluster-enabled yes``,
  made with ``redis-cli --cluster create ... --cluster-replicas 1``), a node
  timeout of 1 s so a killed master's replica is promoted within ~2-3 s.
- ``SentinelProcs``: 1 master, 1 replica, 3 sentinels (``redis-server
  sentinel.conf --sentinel``), quorum 2, down-after 1 s.

Each process dies with the test runner (PR_SET_PDEATHSIG); every wait is bounded.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import redis
import redis.cluster
import redis.sentinel

from .host import free_port
from .redis import RedisServer
from .wait import wait_until

REDIS7 = Path("/usr/bin/redis-server")
REDIS_CLI = Path("/usr/bin/redis-cli")
HAVE_REDIS7 = REDIS7.exists() and REDIS_CLI.exists()
SKIP_REASON = "needs Debian's redis-server 7 and redis-cli at /usr/bin (.ci/run installs them)"
REPLICATION = ["--repl-diskless-sync-delay", "0", "--repl-diskless-sync", "yes"]


class Node(RedisServer):
    """One redis-server 7 process on a fixed port, restartable (``extra``: its own flags)."""

    binary = REDIS7
    start_timeout = 10.0

    def __init__(self, directory: Path, name: str, extra: list[str] | None = None, port: int | None = None):
        super().__init__(Path(directory) / name, port)
        self.name = name
        self.extra = list(extra or [])

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [*super().argv(), *REPLICATION, *self.extra]

    def start(self) -> "Node":
        super().start()
        return self

    def info(self, section: str = "replication") -> dict:
        with self.client() as c:
            return c.info(section)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def synced(replica: Node, master: Node) -> bool:
    """The replica's link is up and it has every byte the master has written."""
    info, minfo = replica.info(), master.info()
    return info.get("master_link_status") == "up" and info.get("master_repl_offset") == minfo.get("master_repl_offset")


class ClusterProcs:
    """A 6-node Redis Cluster: 3 masters, one replica each."""

    def __init__(self, directory: Path, masters: int = 3, node_timeout_ms: int = 1000):
        self.dir = Path(directory)
        self.nodes: list[Node] = []
        for n in range(masters * 2):
            bus = free_port()
            self.nodes.append(Node(self.dir, f"node{n}", [
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms), "--cluster-port", str(bus),
                "--cluster-replica-validity-factor", "0", "--cluster-require-full-coverage", "yes"]))

    def start(self) -> "ClusterProcs":
        for node in self.nodes:
            node.start()
        out = subprocess.run([str(REDIS_CLI), "--cluster", "create", *(n.addr for n in self.nodes),
                              "--cluster-replicas", "1", "--cluster-yes"],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")
        wait_until(self.healthy, 30, interval=0.1, what="cluster_state:ok on every node, replicas in sync")
        return self

    def healthy(self) -> bool:
        for node in self.nodes:
            if not node.alive:
                continue
            with node.client() as c:
                if c.cluster("info")["cluster_state"] != "ok":
                    return False
        return all(synced(r, self.master_of(r)) for r in self.replicas())

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(n.addr for n in self.nodes[:3])

    def client(self) -> redis.cluster.RedisCluster:
        alive = [n for n in self.nodes if n.alive]
        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode("127.0.0.1", n.port) for n in alive],
            socket_timeout=2, socket_connect_timeout=1)

    def role(self, node: Node) -> str:
        return node.info()["role"]

    def replicas(self) -> list[Node]:
        return [n for n in self.nodes if n.alive and self.role(n) == "slave"]

    def master_of(self, replica: Node) -> Node:
        info = replica.info()
        return next(n for n in self.nodes if n.port == int(info["master_port"]))

    def slot_master(self, key: str = "{xds}") -> Node:
        """The node that serves ``key``'s slot, asked of a live node."""
        for node in self.nodes:
            if not node.alive:
                continue
            with node.client() as c:
                slot = c.cluster("keyslot", key)
                for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = master[1]
                        return next(n for n in self.nodes if n.port == port)
        raise RuntimeError("no live node answered CLUSTER SLOTS")

    def replica_of(self, master: Node) -> Node:
        return next(r for r in self.replicas() if self.master_of(r) is master)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SentinelProcs:
    """One master, one replica and three sentinels watching ``mymaster`` (quorum 2)."""

    def __init__(self, directory: Path, name: str = "mymaster", down_after_ms: int = 1000,
                 failover_timeout_ms: int = 3000):
        self.dir = Path(directory)
        self.name = name
        self.master = Node(self.dir, "redis0")
        self.replica = Node(self.dir, "redis1")
        self.data = [self.master, self.replica]
        self.sentinels: list[Node] = []
        for n in range(3):
            node = Node(self.dir, f"sentinel{n}")
            conf = node.dir / "sentinel.conf"
            conf.write_text("\n".join([
                f"port {node.port}", "bind 127.0.0.1", "protected-mode no", "daemonize no",
                f"dir {node.dir}", f"logfile {node.log_path}",
                f"sentinel monitor {name} 127.0.0.1 {self.master.port} 2",
                f"sentinel down-after-milliseconds {name} {down_after_ms}",
                f"sentinel failover-timeout {name} {failover_timeout_ms}",
                f"sentinel parallel-syncs {name} 1"]) + "\n")
            node.argv = lambda conf=conf: [str(REDIS7), str(conf), "--sentinel"]  # type: ignore[method-assign]
            self.sentinels.append(node)

    def start(self) -> "SentinelProcs":
        self.master.start()
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.replica.start()
        wait_until(lambda: synced(self.replica, self.master), 15, what="replica in sync")
        for s in self.sentinels:
            s.start()
        wait_until(self.watching, 20, interval=0.1, what="every sentinel knows the replica and the others")
        return self

    def watching(self) -> bool:
        for s in self.sentinels:
            with s.client() as c:
                m = c.sentinel_master(self.name)
                if int(m.get("num-slaves", 0)) < 1 or int(m.get("num-other-sentinels", 0)) < 2:
                    return False
        return True

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(s.addr for s in self.sentinels) + f"/{self.name}"

    def current_master(self) -> Node:
        """The data node the sentinels name as master now."""
        for s in self.sentinels:
            if not s.alive:
                continue
            with s.client() as c:
                _, port = c.sentinel_get_master_addr_by_name(self.name)
                return next(n for n in self.data if n.port == int(port))
        raise RuntimeError("no sentinel answered")

    def client(self) -> redis.Redis:
        sentinel = redis.sentinel.Sentinel([("127.0.0.1", s.port) for s in self.sentinels if s.alive],
                                           socket_timeout=2, socket_connect_timeout=1)
        return sentinel.master_for(self.name, socket_timeout=2, socket_connect_timeout=1)

    def stop(self) -> None:
        for node in (*self.sentinels, *self.data):
            node.stop()
