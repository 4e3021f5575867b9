"""Make before break in filter_chains mode: clusters before the listener that uses them, and
the listener off a cluster before that cluster goes; one response in flight per type.
Over FCDS the same rule runs across three types: cluster, then matcher entry (the listener),
then the chain Envoy asks for; on removal the matcher entry first, then chain and cluster.

Over real gRPC the client decides when to ACK, so each step is observable: what may
not arrive yet is checked with ``expect_silence``.
"""
from __future__ import annotations

import grpc
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import wrappers_pb2

from shared import resources as rs
from xds_server.cache import Cache
from xds_server.delta import DeltaStream
from xds_server.peers import Registry
from xds_server.render import Renderer

from .harness import DOMAIN, builder, eventually, sni
from .test_delta import dsync, updated
from .test_sotw import sync
from .xds_client import CDS, FCDS, LDS, make_node


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

    def __init__(self, *, fcds: bool = False):
        self.cache = Cache(Renderer(rs.FILTER_CHAINS, DOMAIN, fcds=fcds))
        self.builders: dict = {}
        self.cache.replace(0, {})
        self.stream = DeltaStream(self.cache, Registry(self.cache), rs.SUPPORTED,
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

    def request(self, type_url, subscribe=(), nonce="", unsubscribe=(), initial=None):
        self.stream.on_request(discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, resource_names_subscribe=list(subscribe), response_nonce=nonce,
            resource_names_unsubscribe=list(unsubscribe), initial_resource_versions=initial or {}))

    def ack(self, resp):
        self.request(resp.type_url, nonce=resp.nonce)

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


# --- filter_chains over FCDS: cluster -> chain -> listener --------------------------
def matcher(stream, resp) -> list[str]:
    """The SNIs of the FCDS listener's server-name map, checking each maps to the chain named like it."""
    [listener] = stream.resources(resp).values()
    tree = listener.filter_chain_matcher.matcher_tree
    entries = dict(tree.exact_match_map.map)
    for name, on_match in entries.items():
        chain = wrappers_pb2.StringValue.FromString(on_match.action.typed_config.value).value
        assert chain == name, (name, chain)
    assert [c.name for c in listener.filter_chains] == [rs.FCDS_STUB_CHAIN], "one inline chain, never named"
    assert rs.FCDS_STUB_CHAIN not in entries
    return sorted(entries)


async def fcds_sync(ads) -> dict:
    """What Envoy does: CDS and LDS by wildcard, then it asks for the chains the matcher names."""
    got = await dsync(ads, CDS, LDS)
    got[FCDS] = (await dsync(ads, FCDS, subscribe=matcher(ads, got[LDS])))[FCDS]
    return got


def chain_cluster(stream, resp, name: str) -> str:
    chain = stream.resources(resp)[name]
    [proxy] = chain.filters
    return tcp_proxy_pb2.TcpProxy.FromString(proxy.typed_config.value).cluster


async def test_fcds_addition_sends_cluster_and_matcher_entry_then_the_chain_once_the_cluster_is_acked(
        writer, replicas, clients):
    """The listener naming b's chain may go with b's cluster: Envoy holds it warming until it has the
    chain, and the chain goes out only once b's cluster is ACKed (cluster, chain, then the entry in use)."""
    await writer.put(builder("a"))
    replica = await replicas(fcds=True)
    ads = await clients(replica).delta()
    got = await fcds_sync(ads)
    assert updated(got[FCDS]) == [sni("a")] and chain_cluster(ads, got[FCDS], sni("a")) == sni("a")
    version = await writer.put(builder("b"))
    cds = await ads.recv(CDS)
    assert updated(cds) == [sni("b")]
    lds = await ads.recv(LDS)
    assert matcher(ads, lds) == [sni("a"), sni("b")] and lds.system_version_info == str(version)
    await ads.ack(lds)
    await ads.request(FCDS, [sni("b")])  # Envoy asks for the chain the new entry names
    await ads.expect_silence(0.4)  # b's chain routes to b's cluster, not ACKed yet
    await ads.ack(cds)
    resp = await ads.recv(FCDS)
    assert updated(resp) == [sni("b")] and chain_cluster(ads, resp, sni("b")) == sni("b")
    await ads.ack(resp)
    await ads.expect_silence(0.3)
    [peer] = replica.registry.peers
    assert peer.acked == {"cds": str(version), "lds": str(version), "fcds": str(version)}


async def test_fcds_removal_sends_matcher_then_chain_then_cluster(writer, replicas, clients):
    await writer.put(builder("a"), builder("b"))
    replica = await replicas(fcds=True)
    ads = await clients(replica).delta()
    await fcds_sync(ads)
    await writer.remove("b")
    resp = await ads.recv(LDS)
    assert matcher(ads, resp) == [sni("a")]
    await ads.expect_silence(0.4)  # b's chain and cluster stay while the Envoy's listener names b
    await ads.ack(resp)
    resp = await ads.recv(FCDS)
    assert list(resp.removed_resources) == [sni("b")] and not resp.resources
    await ads.expect_silence(0.4)  # b's cluster stays while the Envoy has b's chain
    await ads.ack(resp)
    resp = await ads.recv(CDS)
    assert list(resp.removed_resources) == [sni("b")] and not resp.resources


def listener_view(replica):
    return next(iter(replica.registry.peers)).view


async def test_fcds_a_known_sni_that_moves_changes_only_its_cluster(writer, replicas, clients):
    await writer.put(builder("a", ip="127.0.9.1"), builder("b"))
    replica = await replicas(fcds=True)
    ads = await clients(replica).delta()
    await fcds_sync(ads)
    listener = replica.cache.snapshot(listener_view(replica), LDS)
    await writer.put(builder("a", ip="127.0.9.2"))
    resp = await ads.recv(CDS)
    assert updated(resp) == [sni("a")]
    await ads.ack(resp)
    await ads.expect_silence(0.4)  # neither the listener nor a's chain changed
    assert replica.cache.snapshot(listener_view(replica), LDS) is listener, "the listener was not re-rendered"


async def test_fcds_an_unknown_chain_is_answered_removed(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas(fcds=True)
    ads = await clients(replica).delta()
    await fcds_sync(ads)
    await ads.request(FCDS, ["nobody.builders.internal", rs.FCDS_STUB_CHAIN])
    resp = await ads.recv(FCDS)
    assert sorted(resp.removed_resources) == sorted(["nobody.builders.internal", rs.FCDS_STUB_CHAIN])


async def test_fcds_state_of_the_world_is_refused_and_shown_in_envoys(writer, replicas, clients, store):
    await writer.put(builder("a"))
    replica = await replicas(fcds=True)
    sotw = await clients(replica, node_id="old-bootstrap").sotw()
    await sotw.request(CDS)
    end = await sotw.wait_end()
    assert end.code == grpc.StatusCode.FAILED_PRECONDITION and "delta" in end.details, end

    async def refused():
        entry = (await store.get_status(store.keys.envoys)).get("old-bootstrap") or {}
        return entry.get("refused")
    detail = await eventually(refused, what="the refusal in {xds}:envoys")
    assert "--fcds" in detail["detail"]
    ads = await clients(replica, node_id="old-bootstrap").delta()  # fixed: delta is served
    await fcds_sync(ads)

    async def served():
        entry = (await store.get_status(store.keys.envoys)).get("old-bootstrap") or {}
        return entry.get("acked", {}).get("fcds") and not entry.get("refused")
    await eventually(served, what="the node served once it speaks delta")


async def test_fcds_off_a_plain_replica_ignores_filter_chain_requests(writer, replicas, clients):
    await writer.put(builder("a"))
    replica = await replicas()
    ads = await clients(replica).delta()
    await dsync(ads, CDS, LDS)
    await ads.request(FCDS, [sni("a")])
    await ads.expect_silence(0.4)


def fcds_driven(*builders) -> Driven:
    """An FCDS stream driven by hand, brought to the builders and ACKed, as Envoy would be."""
    d = Driven(fcds=True)
    d.apply(upsert=builders)
    d.request(CDS)
    [cds] = d.responses()
    d.ack(cds)
    d.request(LDS)
    [lds] = d.responses()
    d.ack(lds)
    d.request(FCDS, subscribe=[b.sni for b in builders])
    [fcds] = d.responses()
    d.ack(fcds)
    assert d.responses() == []
    return d


def kinds(responses) -> list[tuple[str, list[str], list[str]]]:
    return [(rs.SHORT[r.type_url], sorted(x.name for x in r.resources), sorted(r.removed_resources))
            for r in responses]


def test_fcds_swap_in_one_turn_keeps_every_step_in_order():
    """c added and b removed in one version: c's cluster and the listener; c's chain once c's cluster is
    ACKed, b's chain removal once the listener without b is ACKed; b's cluster last."""
    d = fcds_driven(builder("a"), builder("b"))
    d.apply(upsert=[builder("c")], remove=["b"])
    cds, lds = d.responses()
    assert kinds([cds]) == [("cds", [sni("c")], [])] and lds.type_url == LDS
    d.ack(lds)
    d.request(FCDS, subscribe=[sni("c")])  # Envoy asks for c's chain as it takes the listener
    assert d.responses() == [], "c's cluster is not ACKed: neither c's chain nor b's removal yet"
    d.ack(cds)
    [fcds] = d.responses()
    assert kinds([fcds]) == [("fcds", [sni("c")], [sni("b")])]
    d.ack(fcds)
    assert kinds(d.responses()) == [("cds", [], [sni("b")])]


def test_fcds_the_envoy_letting_go_of_a_chain_releases_its_cluster():
    """Envoy unsubscribes a chain the listener stopped naming: its held cluster removal may go."""
    d = fcds_driven(builder("a"), builder("b"))
    d.apply(remove=["b"])
    [lds] = d.responses()
    d.apply(upsert=[builder("c")])  # a listener is in flight: b's chain and cluster stay held
    [cds] = d.responses()
    assert kinds([cds]) == [("cds", [sni("c")], [])]
    d.ack(lds)  # the listener without b; Envoy lets go of b's chain before we remove it
    d.request(FCDS, unsubscribe=[sni("b")])
    [lds] = d.responses()  # the listener naming c
    d.ack(cds)
    [cds] = d.responses()
    assert kinds([cds]) == [("cds", [], [sni("b")])], "nothing the Envoy has uses b's cluster any more"
    d.ack(lds)
    d.request(FCDS, subscribe=[sni("c")])
    assert d.responses() == [], "chains wait while clusters are in flight"
    d.ack(cds)
    assert kinds(d.responses()) == [("fcds", [sni("c")], [])]


def test_fcds_a_chain_back_before_its_removal_went_out_is_not_touched():
    d = fcds_driven(builder("a"), builder("b"))
    b = d.builders["b"]
    d.apply(remove=["b"])
    [lds] = d.responses()
    d.apply(upsert=[b])  # b is back while the listener without it is in flight
    d.ack(lds)
    # b's cluster comes again (the same version: a no-op for Envoy) with the listener naming b;
    # b's chain, which the Envoy kept, is neither removed nor resent
    cds, lds = d.responses()
    assert kinds([cds]) == [("cds", [sni("b")], [])] and lds.type_url == LDS
    d.ack(cds)
    d.ack(lds)
    assert d.responses() == []


def test_fcds_a_reconnecting_envoy_is_not_resent_the_chains_it_has():
    first = fcds_driven(builder("a"), builder("b"))
    have = {n: r.version for n, r in first.cache.snapshot(first.stream.peer.view, FCDS).resources.items()}
    d = Driven(fcds=True)
    d.apply(upsert=first.builders.values())
    d.request(CDS)
    d.ack(*d.responses())
    d.request(LDS)
    d.ack(*d.responses())
    d.request(FCDS, subscribe=sorted(have), initial={**have, sni("b"): "stale"})
    assert kinds(d.responses()) == [("fcds", [sni("b")], [])], "a's chain is the one the Envoy has"
