"""State-of-the-world ADS and the per-type CDS/LDS services, with a real gRPC client."""
from __future__ import annotations

import orjson
import pytest

from shared import resources as rs
from shared.keys import Keys

from .harness import builder, eventually, sni
from .xds_client import CDS, LDS

ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


async def sync(ads, *types):
    """Subscribe (wildcard) to each type in turn, receive and ACK; the responses by type."""
    out = {}
    for type_url in types:
        await ads.request(type_url)
        out[type_url] = await ads.recv(type_url)
        await ads.ack(out[type_url])
    return out


def peer_of(replica, node_id):
    peers = [p for p in replica.registry.peers if p.node_id == node_id]
    assert len(peers) == 1, f"{len(peers)} peers named {node_id}"
    return peers[0]


async def test_initial_wildcard_cds_and_lds(writer, replicas, clients):
    version = await writer.put(builder("a", ip="127.0.0.5", port=8443), builder("b", region="ams"))
    replica = await replicas()
    ads = await clients(replica, listener_port="10444", listener_address="127.0.0.9").sotw()
    got = await sync(ads, CDS, LDS)

    cds = got[CDS]
    assert cds.version_info == str(version) and cds.nonce
    clusters = ads.resources(cds)
    assert sorted(clusters) == [sni("a"), sni("b")]
    a = clusters[sni("a")]
    assert a.type == a.STATIC and a.connect_timeout.seconds == 1
    assert a.load_assignment.cluster_name == sni("a")
    [endpoint] = a.load_assignment.endpoints[0].lb_endpoints
    assert (endpoint.endpoint.address.socket_address.address,
            endpoint.endpoint.address.socket_address.port_value) == ("127.0.0.5", 8443)

    lds = got[LDS]
    assert lds.version_info == str(version)
    [listener] = ads.resources(lds).values()
    assert listener.name == rs.BUILDER_LISTENER
    assert (listener.address.socket_address.address, listener.address.socket_address.port_value) == ("127.0.0.9", 10444)
    assert [f.name for f in listener.listener_filters] == [rs.TLS_INSPECTOR]
    chains = {tuple(c.filter_chain_match.server_names): c for c in listener.filter_chains}
    assert sorted(chains) == [(sni("a"),), (sni("b"),)]
    for (name,), chain in chains.items():
        assert chain.filter_chain_match.transport_protocol == "tls"
        [proxy] = chain.filters
        assert proxy.name == rs.TCP_PROXY and name.encode() in proxy.typed_config.value
    await ads.expect_silence(0.3)


async def test_listener_port_from_number_metadata_and_server_default(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas(routing="sni_cluster")
    client = clients(replica, node_id="n1", listener_port=None, listener_address=None)
    client.node.metadata.fields["listener_port"].number_value = 10555.0
    ads = await client.sotw()
    [listener] = ads.resources((await sync(ads, LDS))[LDS]).values()
    assert listener.address.socket_address.port_value == 10555
    plain = await clients(replica, node_id="n2", listener_port=None, listener_address=None).sotw()
    [listener] = plain.resources((await sync(plain, LDS))[LDS]).values()
    assert (listener.address.socket_address.address, listener.address.socket_address.port_value) == \
        (replica.cfg.listener_address, replica.cfg.listener_port)


async def test_ack_is_recorded_and_nothing_is_resent(writer, replicas, clients):
    version = await writer.put(builder("a"))
    replica = await replicas()
    ads = await clients(replica, node_id="acker").sotw()
    await sync(ads, CDS, LDS)
    await ads.expect_silence(0.3)
    assert peer_of(replica, "acker").acked == {"cds": str(version), "lds": str(version)}


async def test_nack_is_recorded_not_resent_and_the_next_version_is_sent(writer, replicas, clients, redis_server):
    await writer.put(builder("a"))
    replica = await replicas()
    ads = await clients(replica, node_id="nacker").sotw()
    first = await sync(ads, CDS, LDS)

    bad = await writer.put(builder("b"))
    resp = await ads.recv(CDS)
    assert resp.version_info == str(bad)
    await ads.nack(resp, "cluster b.builders.internal: invalid")
    await ads.expect_silence(0.5)  # neither the NACKed clusters again, nor a listener that needs them

    peer = peer_of(replica, "nacker")
    assert peer.last_nack["type"] == "cds" and peer.last_nack["version"] == str(bad)
    assert peer.acked == {"cds": first[CDS].version_info, "lds": first[LDS].version_info}

    def published():
        with redis_server.client() as c:
            raw = c.hget(Keys().envoys, "nacker")
        entry = orjson.loads(raw) if raw else {}
        return entry if (entry.get("last_nack") or {}).get("version") == str(bad) else None
    entry = await eventually(published, 5)
    assert entry["last_nack"]["detail"] == "cluster b.builders.internal: invalid" and entry["replica"] == "r1"

    good = await writer.put(builder("c"))
    resp = await ads.recv(CDS)
    assert resp.version_info == str(good)
    assert sorted(ads.names(resp)) == [sni("a"), sni("b"), sni("c")]
    await ads.ack(resp)
    resp = await ads.recv(LDS)
    assert resp.version_info == str(good)


async def test_stale_nonce_is_ignored(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica, node_id="stale").sotw()
    await ads.request(CDS)
    resp = await ads.recv(CDS)
    # neither an ACK nor a NACK when the nonce is not the one in flight
    await ads.request(CDS, version_info=resp.version_info, nonce="not-" + resp.nonce)
    await ads.request(CDS, version_info="", nonce="not-" + resp.nonce, error="stale complaint")
    newer = await writer.put(builder("b"))
    await ads.expect_silence(0.4)  # the first response is still unanswered: nothing more goes out
    peer = peer_of(replica, "stale")
    assert peer.acked == {} and peer.last_nack is None
    await ads.ack(resp)
    resp = await ads.recv(CDS)
    assert resp.version_info == str(newer)
    assert peer.acked == {"cds": str(newer - 1)}


@pytest.mark.parametrize("routing", ["sni_cluster", "filter_chains"])
async def test_versions_are_coalesced_while_a_response_is_unanswered(writer, replicas, clients, routing):
    await writer.put(builder("a"))
    replica = await replicas(routing=routing)
    ads = await clients(replica).sotw()
    await ads.request(CDS)
    first = await ads.recv(CDS)
    for name in ("b", "c", "d"):
        last = await writer.put(builder(name))
    await replica.wait_version(last)
    await ads.expect_silence(0.3)
    await ads.ack(first)
    resp = await ads.recv(CDS)
    assert resp.version_info == str(last)
    assert sorted(ads.names(resp)) == [sni(n) for n in "abcd"]
    await ads.ack(resp)
    await ads.expect_silence(0.3)


async def test_reconnect_with_the_current_version_resends_nothing(writer, replicas, clients):
    await writer.put(builder("a"), builder("b"))
    replica = await replicas()
    client = clients(replica, node_id="again")
    ads = await client.sotw()
    got = await sync(ads, CDS, LDS)
    await ads.close()

    again = await client.sotw()
    await again.request(CDS, version_info=got[CDS].version_info)
    await again.request(LDS, version_info=got[LDS].version_info)
    await again.expect_silence(0.4)
    await eventually(lambda: peer_of(replica, "again").acked == {"cds": "1", "lds": "1"}, 2)

    newer = await writer.put(builder("c"))
    resp = await again.recv(CDS)
    assert resp.version_info == str(newer) and len(resp.resources) == 3


async def test_reconnect_with_an_older_version_gets_everything(writer, replicas, clients):
    old = await writer.put(builder("a"))
    await writer.put(builder("b"))
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica).sotw()
    await ads.request(CDS, version_info=str(old))
    resp = await ads.recv(CDS)
    assert sorted(ads.names(resp)) == [sni("a"), sni("b")]


async def test_unknown_type_urls_are_ignored_and_the_stream_lives_on(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas()
    ads = await clients(replica).sotw()
    await ads.request(ROUTE, ["anything"])
    await ads.request("", [])
    await ads.expect_silence(0.3)
    await ads.request(ROUTE, ["anything"], nonce="7", error="what")
    got = await sync(ads, CDS, LDS)
    assert len(got[CDS].resources) == 1 and ads.end is None


async def test_explicit_names_and_a_changed_subscription(writer, replicas, clients):
    await writer.put(builder("a"), builder("b"), builder("c"))
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica).sotw()
    await ads.request(CDS, [sni("a"), "unknown.builders.internal"])
    resp = await ads.recv(CDS)
    assert ads.names(resp) == [sni("a")]
    await ads.ack(resp)
    await ads.expect_silence(0.3)
    # Envoy changes a SotW subscription by re-sending the full list with the last nonce
    await ads.request(CDS, [sni("a"), sni("b")])
    resp = await ads.recv(CDS)
    assert sorted(ads.names(resp)) == [sni("a"), sni("b")]
    await ads.ack(resp)
    await ads.request(CDS, [sni("c")])
    resp = await ads.recv(CDS)
    assert ads.names(resp) == [sni("c")]
    await ads.ack(resp)
    await writer.put(builder("d"))  # not subscribed: the response still carries only c
    resp = await ads.recv(CDS)
    assert ads.names(resp) == [sni("c")]


async def test_per_type_services(writer, replicas, clients):
    version = await writer.put(builder("a"))
    replica = await replicas()
    client = clients(replica)
    cds = await client.sotw("cds")
    lds = await client.sotw("lds")
    await lds.request(LDS)  # the per-type services are not ordered against each other
    resp = await lds.recv(LDS)
    assert resp.version_info == str(version) and lds.names(resp) == [rs.BUILDER_LISTENER]
    await cds.request(LDS)  # the wrong type for this service: ignored
    await cds.expect_silence(0.3)
    await cds.request(CDS)
    resp = await cds.recv(CDS)
    assert cds.names(resp) == [sni("a")]
    await cds.ack(resp)
    newer = await writer.put(builder("b"))
    assert (await cds.recv(CDS)).version_info == str(newer)


async def test_star_among_names_is_wildcard(writer, replicas, clients):
    await writer.put(builder("a"), builder("b"))
    replica = await replicas(routing="sni_cluster")
    ads = await clients(replica).sotw()
    await ads.request(CDS, ["*", sni("a")])
    resp = await ads.recv(CDS)
    assert sorted(ads.names(resp)) == [sni("a"), sni("b")]
