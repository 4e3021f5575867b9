"""Incremental (delta) ADS and the per-type delta services, with a real gRPC client."""
from __future__ import annotations

import time

import pytest
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from shared import resources as rs

from .harness import DOMAIN, builder, sni
from .test_sotw import ROUTE, peer_of
from .xds_client import CDS, LDS


async def dsync(ads, *types, subscribe=()):
    """Subscribe to each type in turn (legacy wildcard unless names are given), receive and ACK."""
    out = {}
    for type_url in types:
        await ads.request(type_url, subscribe)
        out[type_url] = await ads.recv(type_url)
        await ads.ack(out[type_url])
    return out


def updated(resp) -> list[str]:
    return sorted(r.name for r in resp.resources)


@pytest.mark.parametrize("subscribe", [(), ("*",)], ids=["legacy", "star"])
async def test_initial_wildcard_cds_and_lds(writer, replicas, clients, subscribe):
    version = await writer.put(builder("a", ip="127.0.0.7", port=9443), builder("b", region="ams"))
    replica = await replicas()
    ads = await clients(replica, node_id="delta-1").delta()
    got = await dsync(ads, CDS, LDS, subscribe=subscribe)

    cds = got[CDS]
    assert cds.system_version_info == str(version) and cds.nonce and not cds.removed_resources
    clusters = ads.resources(cds)
    assert sorted(clusters) == [sni("a"), sni("b")]
    assert all(r.version for r in cds.resources)
    endpoint = clusters[sni("a")].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (endpoint.address, endpoint.port_value) == ("127.0.0.7", 9443)

    lds = got[LDS]
    [listener] = ads.resources(lds).values()
    assert listener.name == rs.BUILDER_LISTENER and len(listener.filter_chains) == 2
    await ads.expect_silence(0.3)
    assert peer_of(replica, "delta-1").acked == {"cds": str(version), "lds": str(version)}


async def test_first_wildcard_response_is_sent_even_when_empty(writer, replicas, clients):
    """Envoy waits for the first CDS response to finish initializing (else its 15 s initial fetch timeout)."""
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica).delta()
    await ads.request(CDS)
    resp = await ads.recv(CDS)
    assert not resp.resources and not resp.removed_resources
    await ads.ack(resp)
    await ads.request(LDS)
    assert updated(await ads.recv(LDS)) == [rs.BUILDER_LISTENER]
    version = await writer.put(builder("a"))
    resp = await ads.recv(CDS)
    assert updated(resp) == [sni("a")] and resp.system_version_info == str(version)


async def test_nack_is_recorded_not_resent_and_the_next_version_is_sent(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica, node_id="delta-nack").delta()
    await dsync(ads, CDS, LDS)
    bad = await writer.put(builder("b"))
    resp = await ads.recv(CDS)
    assert updated(resp) == [sni("b")]
    await ads.nack(resp, "b is no good")
    await ads.expect_silence(0.4)
    peer = peer_of(replica, "delta-nack")
    assert peer.last_nack["type"] == "cds" and peer.last_nack["version"] == str(bad)
    assert peer.last_nack["detail"] == "b is no good" and peer.acked["cds"] == str(bad - 1)
    good = await writer.put(builder("c"))
    resp = await ads.recv(CDS)
    assert resp.system_version_info == str(good) and updated(resp) == [sni("c")]


async def test_subscription_changes_apply_even_with_a_stale_nonce(writer, replicas, clients):
    await writer.put(builder("a"), builder("b"), builder("c"))
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica).delta()
    await ads.request(CDS, [sni("a")])
    resp = await ads.recv(CDS)
    assert updated(resp) == [sni("a")]
    await ads.ack(resp)
    await ads.request(CDS, [sni("b")], nonce="stale")
    resp = await ads.recv(CDS)
    assert updated(resp) == [sni("b")]
    # while b is unanswered: drop a, add c, with a stale nonce; answered after the ACK
    await ads.request(CDS, [sni("c")], [sni("a")], nonce="stale")
    await ads.expect_silence(0.3)
    await ads.ack(resp)
    resp = await ads.recv(CDS)
    assert updated(resp) == [sni("c")] and not resp.removed_resources
    await ads.ack(resp)
    await writer.remove("a")  # no longer subscribed: nothing to say
    await ads.expect_silence(0.3)
    await writer.remove("b")
    resp = await ads.recv(CDS)
    assert list(resp.removed_resources) == [sni("b")] and not resp.resources


async def test_versions_are_coalesced_while_a_response_is_unanswered(writer, replicas, clients):
    await writer.put(builder("a"), builder("b"))
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica).delta()
    await ads.request(CDS)
    first = await ads.recv(CDS)
    await writer.put(builder("c"))
    await writer.put(builder("d"))
    await writer.remove("c", "a")
    last = await writer.put(builder("b", ip="127.0.9.9"))
    await replica.wait_version(last)
    await ads.expect_silence(0.3)
    await ads.ack(first)
    resp = await ads.recv(CDS)
    assert resp.system_version_info == str(last)
    assert updated(resp) == [sni("b"), sni("d")]  # c came and went: never mentioned
    assert list(resp.removed_resources) == [sni("a")]
    await ads.ack(resp)
    await ads.expect_silence(0.3)


async def test_reconnect_with_initial_resource_versions_gets_only_the_difference(writer, replicas, clients):
    await writer.put(builder("a"), builder("b"), builder("c"))
    replica = await replicas(routing="sni_cluster")
    client = clients(replica)
    ads = await client.delta()
    got = await dsync(ads, CDS, LDS)
    have = {t: ads.versions(r) for t, r in got.items()}
    await ads.close()

    await writer.put(builder("b", ip="127.0.8.8"), builder("d"))
    version = await writer.remove("c")
    again = await client.delta()
    await again.request(CDS, initial=have[CDS])
    resp = await again.recv(CDS)
    assert resp.system_version_info == str(version)
    assert updated(resp) == [sni("b"), sni("d")]
    assert list(resp.removed_resources) == [sni("c")]
    await again.ack(resp)
    await again.request(LDS, initial=have[LDS])  # the sni_cluster listener did not change
    try:
        resp = await again.recv(LDS, timeout=0.5)
        assert not resp.resources and not resp.removed_resources
    except TimeoutError:
        pass
    await again.expect_silence(0.3)


async def test_explicit_subscriptions_then_wildcard(writer, replicas, clients):
    await writer.put(builder("a"), builder("b"))
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica).delta()
    got = await dsync(ads, CDS, subscribe=[sni("a")])
    assert updated(got[CDS]) == [sni("a")]
    await writer.put(builder("c"))  # not subscribed
    await ads.expect_silence(0.3)
    await writer.put(builder("a", ip="127.0.7.7"))
    resp = await ads.recv(CDS)
    assert updated(resp) == [sni("a")]
    assert ads.resources(resp)[sni("a")].load_assignment.endpoints[0].lb_endpoints[0] \
        .endpoint.address.socket_address.address == "127.0.7.7"
    await ads.ack(resp)
    await writer.remove("a")
    resp = await ads.recv(CDS)
    assert list(resp.removed_resources) == [sni("a")] and not resp.resources
    await ads.ack(resp, subscribe=["*"])
    resp = await ads.recv(CDS)
    assert updated(resp) == [sni("b"), sni("c")]
    await ads.ack(resp, unsubscribe=["*"])
    await writer.put(builder("d"))
    await ads.expect_silence(0.3)


@pytest.mark.parametrize("routing", ["sni_cluster", "on_demand"])
async def test_unknown_name_outside_the_domain_is_removed_at_once(writer, replicas, clients, routing):
    await writer.put(builder("a"))
    replica = await replicas(routing=routing, on_demand_wait=5.0)
    ads = await clients(replica).delta()
    await ads.request(CDS, ["nope.example.com", sni("a")])
    resp = await ads.recv(CDS, timeout=1.0)
    assert updated(resp) == [sni("a")] and list(resp.removed_resources) == ["nope.example.com"]


async def test_on_demand_name_is_held_until_its_builder_appears(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas(routing="on_demand", on_demand_wait=3.0)
    ads = await clients(replica).delta()
    [listener] = ads.resources((await dsync(ads, LDS))[LDS]).values()
    [chain] = listener.filter_chains
    assert list(chain.filter_chain_match.server_names) == ["*." + DOMAIN]
    assert [f.name for f in chain.filters] == [rs.SNI_CLUSTER, rs.TCP_PROXY]
    proxy = tcp_proxy_pb2.TcpProxy.FromString(chain.filters[1].typed_config.value)
    assert proxy.on_demand.odcds_config.HasField("ads") and proxy.on_demand.timeout.seconds == 3
    await ads.request(CDS, [sni("late")])
    await ads.expect_silence(0.5)
    version = await writer.put(builder("late"))
    resp = await ads.recv(CDS, timeout=1.0)
    assert updated(resp) == [sni("late")] and resp.system_version_info == str(version)
    assert not resp.removed_resources


async def test_on_demand_name_is_removed_after_the_wait(writer, replicas, clients):
    replica = await replicas(routing="on_demand", on_demand_wait=0.6)
    ads = await clients(replica).delta()
    start = time.monotonic()
    await ads.request(CDS, [sni("never")])
    resp = await ads.recv(CDS, timeout=3.0)
    waited = time.monotonic() - start
    assert list(resp.removed_resources) == [sni("never")] and not resp.resources
    assert 0.5 <= waited < 2.0


async def test_on_demand_wait_does_not_spin_while_a_response_is_unanswered(writer, replicas, clients):
    """A name whose wait ran out while another response is in flight: the stream must sleep, not spin."""
    await writer.put(builder("a"))
    replica = await replicas(routing="on_demand", on_demand_wait=0.2)
    ads = await clients(replica).delta()
    await ads.request(CDS, [sni("never")])
    await ads.expect_silence(0.1)  # held
    await ads.request(CDS, [sni("a")])  # now the wait is pending...
    resp = await ads.recv(CDS)
    assert updated(resp) == [sni("a")]
    cpu = time.process_time()  # ...its deadline passes while this response is not ACKed
    await ads.expect_silence(1.0)
    busy = time.process_time() - cpu
    assert busy < 0.25, f"the server burnt {busy:.2f}s of CPU in 1s while idle"
    await ads.ack(resp)
    resp = await ads.recv(CDS)
    assert list(resp.removed_resources) == [sni("never")]


async def test_unknown_types_are_ignored(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas()
    ads = await clients(replica).delta()
    await ads.request(ROUTE, ["x"])
    await ads.expect_silence(0.3)
    got = await dsync(ads, CDS)
    assert updated(got[CDS]) == [sni("a")]


async def test_per_type_delta_services(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas()
    client = clients(replica)
    cds = await client.delta("cds")
    lds = await client.delta("lds")
    await cds.request(LDS)
    await cds.expect_silence(0.3)
    got = await dsync(cds, CDS)
    assert updated(got[CDS]) == [sni("a")]
    got = await dsync(lds, LDS)
    assert updated(got[LDS]) == [rs.BUILDER_LISTENER]
    await writer.put(builder("b"))
    assert updated(await cds.recv(CDS)) == [sni("b")]
    [listener] = lds.resources(await lds.recv(LDS)).values()
    assert len(listener.filter_chains) == 2
