"""The replica's composition root (``xds_server.replica.Replica``): its exit path always runs."""
from __future__ import annotations

import asyncio
import socket

import pytest

from shared.config import RedisSettings
from shared.keys import Keys
from xds_server.config import XdsConfig
from xds_server.replica import Replica
from xds_server.status import StatusPublisher

from .harness import DOMAIN, eventually


def config(url: str) -> XdsConfig:
    return XdsConfig(redis=RedisSettings(url=url), listen="127.0.0.1:0", domain=DOMAIN, replica_id="r-crash",
                     follow_block_ms=100, status_every=0.05)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_a_crashed_task_still_withdraws_and_stops_serving(redis_server, writer, monkeypatch):
    await writer.put()  # version 1: the replica loads and becomes ready
    published = asyncio.Event()
    publish = StatusPublisher.publish

    async def crashing_run(self):
        await publish(self)
        published.set()
        raise RuntimeError("status publisher bug")

    monkeypatch.setattr(StatusPublisher, "run", crashing_run)
    replica = Replica(config(redis_server.url))
    task = asyncio.create_task(replica.run(asyncio.Event()))
    await asyncio.wait_for(published.wait(), 5)
    r = redis_server.client()
    with pytest.raises(ExceptionGroup):
        await asyncio.wait_for(task, 5)
    assert not r.hexists(Keys().replicas, "r-crash"), "status withdrawn on the way out"
    assert refused(replica.port), "the gRPC port is closed"


async def test_stop_is_graceful_and_safe_twice(redis_server, writer):
    await writer.put()
    replica = await Replica(config(redis_server.url)).start()
    await eventually(lambda: redis_server.client().hexists(Keys().replicas, "r-crash"), 5)
    await replica.stop()
    await replica.stop()
    assert not redis_server.client().hexists(Keys().replicas, "r-crash")
    assert refused(replica.port)
