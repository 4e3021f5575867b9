"""Make before break in filter_chains mode: clusters before the listener that uses them, and
the listener off a cluster before that cluster goes; one response in flight per type.

Over real gRPC the client decides when to ACK, so each step is observable: what may
not arrive yet is checked with ``expect_silence``.
"""
from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2

from shared import resources as rs
from xds_server.cache import Cache
from xds_server.delta import DeltaStream
from xds_server.peers import Registry
from xds_server.render import ListenerSpec, Renderer

from .harness import DOMAIN, builder, sni
from .test_delta import dsync, updated
from .test_sotw import sync
from .xds_client import CDS, LDS, make_node


def chains(stream, resp) -> list[str]:
    [listener] = stream.resources(resp).values()
    return sorted(n for c in listener.filter_chains for n in c.filter_chain_match.server_names)


# --- state of the world ---------------------------------------------------------
async def test_sotw_addition_sends_clusters_then_listener(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas()
    ads = await clients(replica).sotw()
    await sync(ads, CDS, LDS)
    version = await writer.put(builder("b"))
    resp = await ads.recv(CDS)
    assert resp.version_info == str(version) and sorted(ads.names(resp)) == [sni("a"), sni("b")]
    await ads.expect_silence(0.4)  # no listener naming b before the clusters are ACKed
    await ads.ack(resp)
    resp = await ads.recv(LDS)
    assert resp.version_info == str(version) and chains(ads, resp) == [sni("a"), sni("b")]


async def test_sotw_removal_sends_listener_then_clusters(writer, replicas, clients):
    await writer.put(builder("a"), builder("b"))
    replica = await replicas()
    ads = await clients(replica).sotw()
    await sync(ads, CDS, LDS)
    version = await writer.remove("b")
    resp = await ads.recv(LDS)
    assert resp.version_info == str(version) and chains(ads, resp) == [sni("a")]
    await ads.expect_silence(0.4)  # b's cluster stays while a listener may still use it
    await ads.ack(resp)
    resp = await ads.recv(CDS)
    assert resp.version_info == str(version) and ads.names(resp) == [sni("a")]


async def test_sotw_swap_goes_through_a_bridging_union(writer, replicas, clients):
    await writer.put(builder("a"), builder("b"))
    replica = await replicas()
    ads = await clients(replica).sotw()
    await sync(ads, CDS, LDS)
    version = await writer.apply(upsert=[builder("c")], remove=["b"])
    bridge = await ads.recv(CDS)
    assert sorted(ads.names(bridge)) == [sni("a"), sni("b"), sni("c")]
    assert bridge.version_info.startswith(str(version)) and bridge.version_info != str(version)
    await ads.expect_silence(0.4)
    await ads.ack(bridge)
    resp = await ads.recv(LDS)
    assert resp.version_info == str(version) and chains(ads, resp) == [sni("a"), sni("c")]
    await ads.expect_silence(0.4)
    await ads.ack(resp)
    resp = await ads.recv(CDS)
    assert resp.version_info == str(version) and sorted(ads.names(resp)) == [sni("a"), sni("c")]
    await ads.ack(resp)
    await ads.expect_silence(0.3)
    assert replica.registry.peers and all(p.acked == {"cds": str(version), "lds": str(version)}
                                          for p in replica.registry.peers)


async def test_sotw_clusters_stay_while_a_listener_using_them_is_in_flight(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas()
    ads = await clients(replica).sotw()
    await sync(ads, CDS, LDS)
    await writer.put(builder("b"))
    await ads.ack(await ads.recv(CDS))
    in_flight = await ads.recv(LDS)  # names b; not ACKed yet
    assert chains(ads, in_flight) == [sni("a"), sni("b")]
    version = await writer.remove("b")
    await ads.expect_silence(0.4)  # removing b now would break the listener Envoy is applying
    await ads.ack(in_flight)
    resp = await ads.recv(LDS)
    assert resp.version_info == str(version) and chains(ads, resp) == [sni("a")]
    await ads.ack(resp)
    resp = await ads.recv(CDS)
    assert ads.names(resp) == [sni("a")]


# --- delta ------------------------------------------------------------------------
async def test_delta_addition_sends_clusters_then_listener(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas()
    ads = await clients(replica).delta()
    await dsync(ads, CDS, LDS)
    await writer.put(builder("b"))
    resp = await ads.recv(CDS)
    assert updated(resp) == [sni("b")]
    await ads.expect_silence(0.4)
    await ads.ack(resp)
    assert chains(ads, await ads.recv(LDS)) == [sni("a"), sni("b")]


async def test_delta_removal_sends_listener_then_clusters(writer, replicas, clients):
    await writer.put(builder("a"), builder("b"))
    replica = await replicas()
    ads = await clients(replica).delta()
    await dsync(ads, CDS, LDS)
    await writer.remove("b")
    resp = await ads.recv(LDS)
    assert chains(ads, resp) == [sni("a")]
    await ads.expect_silence(0.4)
    await ads.ack(resp)
    resp = await ads.recv(CDS)
    assert list(resp.removed_resources) == [sni("b")] and not resp.resources


async def test_delta_swap_adds_then_switches_then_removes(writer, replicas, clients):
    await writer.put(builder("a"), builder("b"))
    replica = await replicas()
    ads = await clients(replica).delta()
    await dsync(ads, CDS, LDS)
    await writer.apply(upsert=[builder("c")], remove=["b"])
    resp = await ads.recv(CDS)
    assert updated(resp) == [sni("c")] and not resp.removed_resources
    await ads.expect_silence(0.4)
    await ads.ack(resp)
    resp = await ads.recv(LDS)
    assert chains(ads, resp) == [sni("a"), sni("c")]
    await ads.expect_silence(0.4)
    await ads.ack(resp)
    resp = await ads.recv(CDS)
    assert list(resp.removed_resources) == [sni("b")] and not resp.resources


async def test_delta_clusters_stay_while_a_listener_using_them_is_in_flight(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas()
    ads = await clients(replica).delta()
    await dsync(ads, CDS, LDS)
    await writer.put(builder("b"))
    await ads.ack(await ads.recv(CDS))
    in_flight = await ads.recv(LDS)
    await writer.remove("b")
    await ads.expect_silence(0.4)
    await ads.ack(in_flight)
    resp = await ads.recv(LDS)
    assert chains(ads, resp) == [sni("a")]
    await ads.ack(resp)
    resp = await ads.recv(CDS)
    assert list(resp.removed_resources) == [sni("b")]


# --- the delta transport without gRPC: two events in one loop turn ------------------
class Driven:
    """A DeltaStream driven by hand: requests in, responses out, versions applied in between."""

    def __init__(self):
        self.cache = Cache(Renderer("filter_chains", DOMAIN))
        self.builders: dict = {}
        self.cache.replace(0, {})
        self.stream = DeltaStream(self.cache, Registry(self.cache, ListenerSpec()), rs.SUPPORTED,
                                  ordered=True, wait=1.0)
        self.stream.peer = self.stream.registry.join(make_node("driven", "ord"), "delta")

    def apply(self, upsert=(), remove=()):
        builders = dict(self.builders)
        pairs = [(builders.pop(i), None) for i in remove]
        for b in upsert:
            pairs.append((builders.get(b.id), b))
            builders[b.id] = b
        self.builders = builders
        self.cache.apply(self.cache.version + 1, pairs)

    def request(self, type_url, subscribe=(), nonce=""):
        self.stream.on_request(discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, resource_names_subscribe=list(subscribe), response_nonce=nonce))

    def responses(self):
        return [discovery_pb2.DeltaDiscoveryResponse.FromString(body) for _, body in self.stream.responses()]


def test_delta_held_removal_and_a_new_removal_in_one_turn():
    """The listener ACK and the next version arrive together: the held cluster goes, the one
    the ACKed listener still uses stays (a precomputed body of the same length must not be reused)."""
    d = Driven()
    d.apply(upsert=[builder("a"), builder("b")])
    d.request(CDS)
    [cds] = d.responses()
    d.request(CDS, nonce=cds.nonce)
    d.request(LDS)
    [lds] = d.responses()
    d.request(LDS, nonce=lds.nonce)
    assert d.responses() == []

    d.apply(remove=["b"])  # b is held: the ACKed listener uses it
    [lds] = d.responses()
    assert lds.type_url == LDS
    d.request(LDS, nonce=lds.nonce)  # the listener without b is ACKed...
    d.apply(remove=["a"])  # ...and a goes in the same turn
    [resp] = d.responses()
    assert resp.type_url == CDS
    assert list(resp.removed_resources) == [sni("b")], "a is still used by the listener Envoy has"
    d.request(CDS, nonce=resp.nonce)
    [lds] = d.responses()  # the listener without a...
    assert lds.type_url == LDS
    d.request(LDS, nonce=lds.nonce)
    [resp] = d.responses()  # ...then a's cluster
    assert resp.type_url == CDS and list(resp.removed_resources) == [sni("a")]
