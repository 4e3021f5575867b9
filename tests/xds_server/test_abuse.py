"""A replica under abuse: lost Redis connections, slow and NACKing Envoys, floods and garbage."""
from __future__ import annotations

import asyncio

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.procs import free_port, wait_until
from shared.keys import Keys
from .harness import builder, sni
from .test_sotw import sync
from .xds_client import ADS, CDS, XdsClient, make_node

pytestmark = [pytest.mark.timeout(120)]
KEYS = Keys()


async def test_client_kill_of_the_follower_connection_resyncs(writer, replicas, clients, redis_server):
    await writer.put(builder("a"))
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica).sotw()
    await sync(ads, CDS)
    with redis_server.client() as c:
        killed = c.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert killed >= 1
    version = await writer.put(builder("b"))
    resp = await ads.recv(CDS, timeout=5)
    assert resp.version_info == str(version) and sni("b") in ads.names(resp)


async def test_an_envoy_that_nacks_every_version_gets_each_version_once(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica).sotw()
    await ads.request(CDS)
    seen = []
    for n in range(5):
        resp = await ads.recv(CDS, timeout=5)
        seen.append(resp.version_info)
        await ads.nack(resp, f"rejected {n}")
        await writer.put(builder(f"n{n}"))
    resp = await ads.recv(CDS, timeout=5)
    seen.append(resp.version_info)
    await ads.nack(resp)
    await ads.expect_silence(0.5)
    assert len(seen) == len(set(seen)) == 6, seen
    peer = next(iter(replica.registry.peers))
    assert peer.last_nack["version"] == seen[-1]


async def test_huge_subscription_lists_are_capped(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas(routing="on_demand")
    ads = await clients(replica).delta()
    names = [f"x{n}.elsewhere.example" for n in range(20_000)] + [sni("a")]
    await ads.request(CDS, subscribe=names)
    resp = await ads.recv(CDS, timeout=10)
    # the first 10,000 names are kept, and being outside the builder domain, reported removed at once;
    # the rest (the builder's name last) are ignored
    assert len(resp.removed_resources) == 10_000 and set(resp.removed_resources) == set(names[:10_000])
    assert not resp.resources
    healthy = await clients(replica, node_id="other").delta()
    await healthy.request(CDS, subscribe=[sni("a")])
    assert [r.name for r in (await healthy.recv(CDS)).resources] == [sni("a")]


async def test_garbage_bytes_end_only_that_stream(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas(routing="sni_cluster")
    async with grpc.aio.insecure_channel(replica.address) as channel:
        call = channel.stream_stream(ADS + "StreamAggregatedResources")()
        await call.write(b"\xff\xff\xff\x07 this is not a DiscoveryRequest")
        with pytest.raises(grpc.aio.AioRpcError):
            async for _ in call:
                pass
    ads = await clients(replica).sotw()
    assert sni("a") in ads.names((await sync(ads, CDS))[CDS])


async def test_corrupt_json_in_redis_is_skipped_and_good_routes_stay(writer, replicas, clients, redis_server):
    await writer.put(builder("a"), builder("b"))
    with redis_server.client() as c:
        c.hset(KEYS.builders, "evil", b"{not json\xff")
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica).sotw()
    assert sorted(ads.names((await sync(ads, CDS))[CDS])) == [sni("a"), sni("b")]
    version = await writer.put(builder("c"))
    resp = await ads.recv(CDS, timeout=5)
    assert resp.version_info == str(version) and len(ads.names(resp)) == 3


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow
async def test_a_slow_envoy_costs_bounded_memory_and_others_are_unaffected(tmp_path, writer, redis_server, procs):
    await writer.put(*(builder(f"s{n:04d}") for n in range(4000)))  # ~700 KB per SotW CDS response
    port = free_port()
    xds = procs.start("xds-server", ["--redis-url", redis_server.url, "--listen", f"127.0.0.1:{port}",
                                     "--routing", "sni_cluster", "--log-level", "warning"])
    wait_until(lambda: serving(port), 15)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 1 << 28)])
    stuck = channel.stream_stream(ADS + "StreamAggregatedResources",
                                  request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString)()
    await stuck.write(discovery_pb2.DiscoveryRequest(node=make_node("stuck"), type_url=CDS))
    async with XdsClient(f"127.0.0.1:{port}", "healthy") as client:
        ads = await client.sotw()
        await sync(ads, CDS)
        await asyncio.sleep(0.5)
        before = rss_mb(xds.pid)
        for n in range(40):  # 40 versions of ~700 KB: 28 MB if they piled up for the stuck stream
            version = await writer.put(builder(f"s{n:04d}", port=2000 + n))
            resp = await ads.recv(CDS, timeout=10)
            while resp.version_info != str(version):
                await ads.ack(resp)
                resp = await ads.recv(CDS, timeout=10)
            await ads.ack(resp)
        grown = rss_mb(xds.pid) - before
    stuck.cancel()
    await channel.close()
    assert grown < 15, f"replica RSS grew {grown:.1f} MB with one stuck stream"


def serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1).status
        return status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.slow
async def test_2000_stream_opens_at_once_are_shed_beyond_the_limit(writer, redis_server, procs):
    await writer.put(builder("a"))
    port = free_port()
    procs.start("xds-server", ["--redis-url", redis_server.url, "--listen", f"127.0.0.1:{port}",
                               "--routing", "sni_cluster", "--max-streams", "1000", "--log-level", "warning"])
    wait_until(lambda: serving(port), 15)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(20)]
    outcomes: dict[str, int] = {}
    details: dict[str, str] = {}

    async def one(i: int) -> None:
        call = channels[i % 20].stream_stream(
            ADS + "StreamAggregatedResources", request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString)()
        try:
            await call.write(discovery_pb2.DiscoveryRequest(node=make_node(f"flood-{i}"), type_url=CDS))
            await asyncio.wait_for(call.read(), 30)
            key = "served"
            await asyncio.sleep(3)  # hold the stream while the others arrive
        except grpc.aio.AioRpcError:
            code = await call.code()  # the call's status (a write racing the abort reports INTERNAL)
            key = code.name
            details.setdefault(key, await call.details())
        except (asyncio.InvalidStateError, TimeoutError):
            key = "other"
        outcomes[key] = outcomes.get(key, 0) + 1
        call.cancel()

    await asyncio.gather(*(one(i) for i in range(2000)))
    for ch in channels:
        await ch.close()
    # a client write racing the server's abort ends INTERNAL or CANCELLED on the client side
    assert set(outcomes) <= {"served", "RESOURCE_EXHAUSTED", "INTERNAL", "CANCELLED"}, (outcomes, details)
    assert outcomes.get("RESOURCE_EXHAUSTED", 0) >= 500, (outcomes, details)
    assert 900 <= outcomes.get("served", 0) <= 1000, (outcomes, details)
    assert serving(port)
    async with XdsClient(f"127.0.0.1:{port}", "after") as client:
        ads = await client.sotw()
        await sync(ads, CDS)
