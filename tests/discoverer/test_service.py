"""The discoverer's composition root (``DiscovererService``), the object ``discoverer`` runs, in process."""
from __future__ import annotations

import asyncio
import json

import pytest

from discoverer import config, status
from discoverer.service import DiscovererService
from harness.procs import async_wait_until
from shared.keys import Keys

KEYS = Keys()


def service_for(redis_url: str, path, holder: str = "svc-a") -> DiscovererService:
    path.write_text(json.dumps([{"id": "b01", "app": "web", "region": "ams", "ip": "127.0.0.9"}]))
    cfg = config.from_args(["--redis-url", redis_url, "--source", "file", "--file", str(path), "--id", holder,
                            "--poll-interval", "0.02", "--lease-ttl", "5"])
    return DiscovererService(cfg)


async def test_a_stop_releases_the_lease_and_withdraws_the_status(redis_server, tmp_path):
    service, stop = service_for(redis_server.url, tmp_path / "b.json"), asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    r = redis_server.client()
    await async_wait_until(lambda: asyncio.sleep(0, r.hexists(KEYS.routes, "b01.builders.internal")), 5,
                           what="the builder written")
    assert r.get(KEYS.leader) == b"svc-a" and r.hexists(KEYS.discoverers, "svc-a")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert r.get(KEYS.leader) is None, "released, not left to expire (5 s TTL)"
    assert not r.hexists(KEYS.discoverers, "svc-a")


async def test_a_crashed_task_still_releases_the_lease(redis_server, tmp_path, monkeypatch):
    """The exit path runs when a task dies: a standby takes over at once, not after the TTL."""
    led = asyncio.Event()

    async def crashing_publish(election, disc, every=1.0):
        while election.lease() is None:
            await asyncio.sleep(0.01)
        led.set()
        raise RuntimeError("status publisher bug")

    monkeypatch.setattr(status, "publish", crashing_publish)
    service = service_for(redis_server.url, tmp_path / "b.json")
    task = asyncio.create_task(service.run(asyncio.Event()))
    await asyncio.wait_for(led.wait(), 5)
    with pytest.raises(ExceptionGroup):
        await asyncio.wait_for(task, 5)
    assert redis_server.client().get(KEYS.leader) is None


async def test_start_and_stop_like_a_replica_and_stop_twice(redis_server, tmp_path):
    """``async with`` runs the whole service in a task; stop() releases and withdraws, and is safe twice."""
    service = service_for(redis_server.url, tmp_path / "b.json")
    r = redis_server.client()
    async with service:
        assert service.started.is_set() and service.tasks and not any(t.done() for t in service.tasks)
        await async_wait_until(lambda: asyncio.sleep(0, r.hexists(KEYS.routes, "b01.builders.internal")), 5,
                               what="the builder written")
        assert r.get(KEYS.leader) == b"svc-a"
    assert r.get(KEYS.leader) is None and not r.hexists(KEYS.discoverers, "svc-a")
    assert service.election is None, "unwired on the way out"
    await service.stop()  # a second stop does nothing
