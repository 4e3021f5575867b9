"""A replica survives the unexpected: a bug in one follower step or one stream, a key of the wrong type.

Each case keeps serving the last good set, logs the cause once (with its
traceback, or naming the key and the fix), counts it, and recovers.
"""
from __future__ import annotations

import logging

import grpc
import pytest
from prometheus_client import REGISTRY

from shared.keys import Keys
from xds_server.sotw import SotwStream

from .harness import builder, eventually, sni
from .test_sotw import sync
from .xds_client import CDS

pytestmark = [pytest.mark.timeout(60)]
KEYS = Keys()


def count(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def tracebacks(caplog, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info and text in r.getMessage()]


async def test_a_follower_step_that_raises_something_unplanned_keeps_serving_and_resyncs(
        writer, replicas, clients, caplog):
    version = await writer.put(builder("a"))
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica).sotw()
    await sync(ads, CDS)
    crashes = count("xds_loop_crashes_total", loop="follow")
    store, real = replica.follower.store, replica.follower.store.read_changes
    calls = 0

    async def read_once_broken(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("a bug in the follower")
        return await real(*args, **kwargs)

    store.read_changes = read_once_broken
    await eventually(lambda: calls >= 2, 5, what="the follower reads again after the crash")
    assert count("xds_loop_crashes_total", loop="follow") == crashes + 1
    assert replica.cache.version == version and replica.cache.ready
    late = await clients(replica, node_id="late").sotw()
    assert sni("a") in late.names((await sync(late, CDS))[CDS]), "still serving the last set"
    newer = await writer.put(builder("b"))
    resp = await ads.recv(CDS, timeout=5)
    assert resp.version_info == str(newer) and {sni("a"), sni("b")} <= set(ads.names(resp))
    logged = tracebacks(caplog, "follow: unexpected KeyError")
    assert len(logged) == 1 and "serving version" in logged[0].getMessage()


async def test_a_stream_that_raises_something_unplanned_ends_only_that_stream(
        writer, replicas, clients, monkeypatch, caplog):
    await writer.put(builder("a"))
    replica = await replicas(routing="sni_cluster")
    good = await clients(replica, node_id="good").sotw()
    await sync(good, CDS)
    crashes = count("xds_loop_crashes_total", loop="stream")
    real = SotwStream.on_request

    def on_request(self, req):
        if self.peer is not None and self.peer.node_id.startswith("bad"):
            raise ZeroDivisionError("a bug in one stream")
        return real(self, req)

    monkeypatch.setattr(SotwStream, "on_request", on_request)
    for n in range(3):
        bad = await clients(replica, node_id=f"bad-{n}").sotw()
        await bad.request(CDS)
        end = await bad.wait_end(5)
        assert end.code == grpc.StatusCode.INTERNAL and "reconnect" in end.details
    assert count("xds_loop_crashes_total", loop="stream") == crashes + 3
    assert len(tracebacks(caplog, "stream: unexpected ZeroDivisionError")) == 1, "once per distinct cause"
    version = await writer.put(builder("b"))
    resp = await good.recv(CDS, timeout=5)
    assert resp.version_info == str(version), "the other stream goes on"
    assert {p.node_id for p in replica.registry.peers} == {"good"}, "the crashed streams left the registry"


async def test_a_key_of_the_wrong_type_is_an_operator_error_that_names_the_key(
        writer, replicas, clients, redis_server, caplog):
    version = await writer.put(builder("a"))
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica).sotw()
    await sync(ads, CDS)
    errors = count("xds_redis_operator_errors_total", code="WRONGTYPE")
    with redis_server.client() as c:
        c.delete(KEYS.changes)
        c.set(KEYS.changes, "x")  # by hand, or another program sharing the prefix
    await eventually(lambda: count("xds_redis_operator_errors_total", code="WRONGTYPE") >= errors + 3, 5,
                     what="the refusal counted, three times")
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and KEYS.changes in r.getMessage()]
    assert len(logged) == 1, "logged once per cause, not at every retry"
    assert f"{KEYS.changes} holds a string, not the stream" in logged[0].getMessage()
    assert f"redis-cli DEL '{KEYS.changes}'" in logged[0].getMessage()
    assert "serving version" in logged[0].getMessage()
    assert replica.cache.version == version
    late = await clients(replica, node_id="late").sotw()
    assert sni("a") in late.names((await sync(late, CDS))[CDS]), "still serving the last set"
    with redis_server.client() as c:
        c.delete(KEYS.changes)  # what the log line says to do
    newer = await writer.put(builder("b"))
    await replica.wait_version(newer, timeout=5)
    resp = await ads.recv(CDS, timeout=5)
    assert resp.version_info == str(newer) and sni("b") in ads.names(resp)


async def test_a_status_key_of_the_wrong_type_is_logged_and_the_publisher_goes_on(
        writer, replicas, redis_server, caplog):
    await writer.put(builder("a"))
    with redis_server.client() as c:
        c.set(KEYS.replicas, "x")
    errors = count("xds_redis_operator_errors_total", code="WRONGTYPE")
    replica = await replicas(routing="sni_cluster")
    await eventually(lambda: count("xds_redis_operator_errors_total", code="WRONGTYPE") > errors + 2, 5)
    assert any(r.levelno == logging.ERROR and f"{KEYS.replicas} holds a string, not the hash" in r.getMessage()
               for r in caplog.records)
    with redis_server.client() as c:
        c.delete(KEYS.replicas)
        await eventually(lambda: c.hget(KEYS.replicas, replica.cfg.replica_id), 5, what="status written again")
