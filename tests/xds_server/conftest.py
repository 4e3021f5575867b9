"""Fixtures for the ADS server: in-process replicas on a real Redis, a fenced writer, xDS clients.

- ``writer``: writes builder sets the way the discoverer does (lease, then
  ``Store.apply(lease, expected_version, upsert, remove)``).
- ``replicas``: ``await replicas(routing=..., region_scope=...)`` starts one
  in-process replica (see ``harness.start_replica``); all stopped at teardown.
- ``clients``: ``clients(replica, node_id=..., region=...)`` opens an
  ``XdsClient``; all are closed before the replicas stop.
"""
from __future__ import annotations

import asyncio
import contextlib

import pytest

from .harness import TestReplica as Replica, Writer, start_replica
from .xds_client import XdsClient


@pytest.fixture
async def writer(store) -> Writer:
    return Writer(store)


@pytest.fixture
async def replicas(redis_server):
    started: list[Replica] = []

    async def start(*, wait_loaded: bool = True, **kwargs) -> Replica:
        kwargs.setdefault("replica_id", f"r{len(started) + 1}")
        replica = await start_replica(redis_server.url, **kwargs)
        started.append(replica)
        if wait_loaded:
            await asyncio.wait_for(replica.follower.loaded.wait(), 5)
        return replica

    try:
        yield start
    finally:
        for replica in started:
            await replica.stop()


@pytest.fixture
async def clients(replicas):
    opened: list[XdsClient] = []

    def open_client(replica: Replica | str, node_id: str = "envoy-1", region: str = "ord", **kwargs) -> XdsClient:
        if not isinstance(replica, str):
            kwargs.setdefault("server", replica)
        address = replica if isinstance(replica, str) else replica.address
        client = XdsClient(address, node_id, region, **kwargs)
        opened.append(client)
        return client

    try:
        yield open_client
    finally:
        for client in opened:
            with contextlib.suppress(Exception):
                await client.close()
