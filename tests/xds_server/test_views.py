"""Per-node views (region scope), versions that are Redis versions, and replicas that agree byte for byte."""
from __future__ import annotations

import pytest

from .harness import builder, eventually, sni
from .test_delta import dsync, updated
from .test_sotw import sync
from .test_ordering import chains
from .xds_client import CDS, LDS


async def test_local_region_scope_shows_each_envoy_its_region(writer, replicas, clients):
    await writer.put(builder("a", "ord"), builder("b", "ams"), builder("c", "ord"))
    replica = await replicas(region_scope="local")
    ord_ads = await clients(replica, node_id="ord-1", region="ord").sotw()
    ams_ads = await clients(replica, node_id="ams-1", region="AMS").delta()
    got = await sync(ord_ads, CDS, LDS)
    assert sorted(ord_ads.names(got[CDS])) == [sni("a"), sni("c")]
    assert chains(ord_ads, got[LDS]) == [sni("a"), sni("c")]
    dgot = await dsync(ams_ads, CDS, LDS)
    assert updated(dgot[CDS]) == [sni("b")] and chains(ams_ads, dgot[LDS]) == [sni("b")]

    version = await writer.put(builder("d", "ams"))
    resp = await ams_ads.recv(CDS)
    assert updated(resp) == [sni("d")] and resp.system_version_info == str(version)
    await ams_ads.ack(resp)
    assert chains(ams_ads, await ams_ads.recv(LDS)) == [sni("b"), sni("d")]
    await ord_ads.expect_silence(0.3)  # nothing changed in ord

    version = await writer.remove("a")
    resp = await ord_ads.recv(LDS)  # filter_chains: the listener first
    assert resp.version_info == str(version) and chains(ord_ads, resp) == [sni("c")]
    await ams_ads.expect_silence(0.3)


async def test_all_region_scope_shows_everything(writer, replicas, clients):
    await writer.put(builder("a", "ord"), builder("b", "ams"))
    replica = await replicas(region_scope="all")
    ads = await clients(replica, region="ord").sotw()
    got = await sync(ads, CDS, LDS)
    assert sorted(ads.names(got[CDS])) == [sni("a"), sni("b")]
    assert chains(ads, got[LDS]) == [sni("a"), sni("b")]


async def test_version_info_is_the_redis_version(writer, replicas, clients, redis_server):
    replica = await replicas(routing="sni_cluster")
    client = clients(replica)
    ads, delta = await client.sotw(), await client.delta()
    await sync(ads, CDS)
    await dsync(delta, CDS)
    for step in range(3):
        version = await writer.put(builder(f"b{step}"))
        with redis_server.client() as c:
            assert int(c.get("{xds}:version")) == version
        resp = await ads.recv(CDS)
        assert resp.version_info == str(version)
        await ads.ack(resp)
        dresp = await delta.recv(CDS)
        assert dresp.system_version_info == str(version)
        await delta.ack(dresp)


def sotw_bytes(resp) -> tuple:
    return resp.version_info, [a.SerializeToString() for a in resp.resources]


def delta_bytes(resp) -> tuple:
    return resp.system_version_info, {r.name: (r.version, r.resource.SerializeToString()) for r in resp.resources}


@pytest.mark.parametrize("routing", ["filter_chains", "sni_cluster"])
async def test_two_replicas_serve_identical_bytes(writer, replicas, clients, routing):
    """One replica followed every change, the other loaded the result whole: same responses."""
    early = await replicas(routing=routing, replica_id="early")
    await writer.put(builder("a", ip="127.0.1.1"), builder("b"), builder("c", "ams"))
    await writer.put(builder("a", ip="127.0.1.2"))  # an update moves a in the early replica's maps
    await writer.remove("b")
    version = await writer.put(builder("d"), builder("e", "ams"))
    await early.wait_version(version)
    late = await replicas(routing=routing, replica_id="late")

    sotw, delta = {}, {}
    for name, replica in (("early", early), ("late", late)):
        client = clients(replica, node_id=f"envoy-{name}")
        ads = await client.sotw()
        got = await sync(ads, CDS, LDS)
        sotw[name] = {t: sotw_bytes(r) for t, r in got.items()}
        dads = await client.delta()
        dgot = await dsync(dads, CDS, LDS)
        delta[name] = {t: delta_bytes(r) for t, r in dgot.items()}
    assert sotw["early"][CDS][0] == str(version)
    assert len(sotw["early"][CDS][1]) == 4
    assert sotw["early"] == sotw["late"]
    assert delta["early"] == delta["late"]


async def test_views_are_dropped_when_their_last_stream_leaves_and_bounded(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas(routing="sni_cluster")
    cache = replica.cache
    cache.max_views = 2
    client_a = clients(replica, listener_port="20001")
    ads = await client_a.sotw()
    await sync(ads, CDS)
    assert len(cache._open) == 1
    await client_a.close()
    await eventually(lambda: not cache._open, what="view dropped after the stream left")
    assert not replica.cache._series, "the cache forgets a view nobody uses"
    for port in ("20002", "20003"):
        s = await clients(replica, listener_port=port).sotw()
        await sync(s, CDS)
    late = await clients(replica, listener_port="20004").sotw()
    await late.request(CDS)
    end = await late.wait_end(5)
    assert end.code.name == "RESOURCE_EXHAUSTED", end
