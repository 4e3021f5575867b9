"""The gRPC server around the transports: stream limit, health, status in Redis, the real process."""
from __future__ import annotations

import asyncio
import logging

import grpc
import orjson
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.procs import free_port
from shared.keys import Keys

from .harness import builder, eventually, sni
from .test_sotw import peer_of, sync
from .xds_client import CDS, LDS, XdsClient

KEYS = Keys()


async def test_streams_over_the_limit_get_resource_exhausted(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas(max_streams=2)
    client = clients(replica)
    first, second = await client.sotw(), await client.delta()
    await first.request(CDS)
    await second.request(CDS)
    await first.recv(CDS)
    await second.recv(CDS)
    third = await client.sotw()
    await third.request(CDS)
    end = await third.wait_end()
    assert end.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    await first.close()

    async def a_stream_fits():
        again = await client.sotw()
        await again.request(CDS)
        try:
            return sni("a") in again.names(await again.recv(CDS, timeout=1.0))
        except ConnectionError:
            return False
    assert await eventually(a_stream_fits, 5, "a stream below the limit again")


async def test_status_of_the_replica_and_its_envoys_in_redis(writer, replicas, clients, redis_server):
    version = await writer.put(builder("a"))
    replica = await replicas(replica_id="status-1")
    ads = await clients(replica, node_id="envoy-s").sotw()
    await sync(ads, CDS, LDS)

    def entry(key, field):
        with redis_server.client() as c:
            raw = c.hget(key, field)
        return orjson.loads(raw) if raw else None

    envoy = await eventually(lambda: (e := entry(KEYS.envoys, "envoy-s")) and e["acked"].get("lds") and e)
    assert envoy["acked"] == {"cds": str(version), "lds": str(version)} and envoy["replica"] == "status-1"
    assert envoy["region"] == "ord" and envoy["last_nack"] is None
    status = entry(KEYS.replicas, "status-1")
    assert status["ready"] is True and status["version"] == version and status["streams"] == 1
    await ads.close()
    await eventually(lambda: entry(KEYS.envoys, "envoy-s") is None, what="the envoy entry removed")


def health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0).status


async def test_process_reports_serving_only_after_the_first_load(writer, redis_server, procs):
    version = await writer.put(builder("a"), builder("b"))
    with redis_server.client() as c:
        c.save()
    redis_server.stop()  # the replica starts while Redis is away
    address = f"127.0.0.1:{free_port()}"
    proc = procs.start("xds-server", ["--listen", address, "--redis-url", redis_server.url,
                                      "--routing", "sni_cluster", "--replica-id", "proc-1"])
    status = await eventually(lambda: health(address), 15, "the health service answering")
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING

    async with XdsClient(address, "early-envoy", "ord") as client:
        ads = await client.sotw()
        await ads.request(CDS)
        await ads.expect_silence(0.5)  # nothing before the first load, certainly not an empty set
        # (however slow the server, the first response below must be the loaded set: that is the proof)
        redis_server.start()  # with its dump
        await eventually(lambda: health(address) == health_pb2.HealthCheckResponse.SERVING, 10, "SERVING")
        resp = await ads.recv(CDS, timeout=5)
        assert resp.version_info == str(version) and sorted(ads.names(resp)) == [sni("a"), sni("b")]
    assert proc.stop() == 0, proc.tail()  # SIGTERM: a graceful stop
    assert proc.log_has("stopped")


async def test_status_written_while_redis_was_down_is_published_when_it_returns(
        writer, replicas, clients, redis_server, caplog):
    caplog.set_level(logging.DEBUG, "xds_server.status")
    version = await writer.put(builder("a"))
    replica = await replicas(replica_id="status-2")
    ads = await clients(replica, node_id="envoy-d").sotw()
    await sync(ads, CDS)
    await ads.request(LDS)
    held = await ads.recv(LDS)

    def acked():
        with redis_server.client() as c:
            raw = c.hget(KEYS.envoys, "envoy-d")
        return orjson.loads(raw)["acked"] if raw else None
    await eventually(lambda: acked() == {"cds": str(version)}, what="the CDS ACK published")
    with redis_server.client() as c:
        c.save()
    redis_server.stop()
    await ads.ack(held)  # while Redis is away
    await eventually(lambda: peer_of(replica, "envoy-d").acked.get("lds") == str(version), what="the LDS ACK")
    caplog.clear()
    await eventually(lambda: any("status not published" in r.getMessage() for r in caplog.records),
                     what="the publisher trying and failing with the ACK")
    await asyncio.to_thread(redis_server.start)
    # well before the next full publish (every stale_after/3 = 5 s)
    await eventually(lambda: acked() == {"cds": str(version), "lds": str(version)}, 1.5, "the LDS ACK published")
