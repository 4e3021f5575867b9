"""Two regions on loopback joined by the user-space WAN (harness/wan.py): ord holds the Redis
primary, syd a replica that replicates through the delayed path, and every client in syd
dials the primary through it too. ``two_regions`` yields a ``Regions`` to cut and heal."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from harness.wan import WanControl, default_rtt_ms
from tests.support.procs import Proc, free_port, wait_until
from tests.support.redis_ha import HAVE_REDIS7, SKIP_REASON, Node

REPLICA_TIMING = ["--repl-timeout", "3", "--repl-ping-replica-period", "1"]


@dataclass
class Regions:
    primary: Node  # in ord
    replica: Node  # in syd, replicating through the WAN
    relay_port: int  # in syd: the primary, one WAN path away
    wan: WanControl
    rtt: float  # seconds, ord-syd

    @property
    def primary_url(self) -> str:  # as a process in ord dials it
        return f"redis://{self.primary.addr}/0"

    @property
    def primary_url_from_syd(self) -> str:
        return f"redis://127.0.0.1:{self.relay_port}/0"

    @property
    def replica_url(self) -> str:
        return f"redis://{self.replica.addr}/0"


@pytest.fixture
def two_regions(tmp_path):
    if not HAVE_REDIS7:
        pytest.skip(SKIP_REASON)
    primary = Node(tmp_path / "redis", "ord-primary").start()
    relay_port = free_port()
    rtt = default_rtt_ms("ord", "syd")
    spec = {"paths": [{"a": "ord", "b": "syd", "one_way_ms": rtt / 2,
                       "endpoints": [["127.0.0.1", relay_port, "127.0.0.1", primary.port]]}]}
    (tmp_path / "wan.json").write_text(json.dumps(spec))
    control = tmp_path / "wan.sock"
    relay = Proc.start_python(["-m", "harness.wan", tmp_path / "wan.json", control], tmp_path / "logs", label="wan")
    replica = None
    try:
        relay.wait_for_log("wan relay ready", 10)
        replica = Node(tmp_path / "redis", "syd-replica",
                       ["--replicaof", "127.0.0.1", str(relay_port), *REPLICA_TIMING]).start()
        wait_until(lambda: replica.info().get("master_link_status") == "up", 15, what="the syd replica linked")
        yield Regions(primary, replica, relay_port, WanControl(str(control)), rtt / 1000)
    finally:
        for node in (replica, primary):
            if node is not None:
                node.stop()
        relay.stop()
