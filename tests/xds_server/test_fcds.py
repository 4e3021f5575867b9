"""filter_chains over FCDS, below the transports: what is rendered, what a change costs, and the flags.

The transports' side (three-type make before break, refusing SotW) is in test_ordering.py;
real Envoy and real TLS in tests/e2e/test_routing.py (mode ``fcds``).
"""
from __future__ import annotations

import subprocess

import pytest
import yaml
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.service.discovery.v3 import discovery_pb2

from harness.envoy import envoy_binary
from harness.procs import script
from shared import resources as rs
from shared.errors import ConfigError
from xds_server import config
from xds_server.cache import Cache
from xds_server.render import ListenerSpec, Renderer

from .harness import DOMAIN, builder, sni

VIEW_SPEC = ListenerSpec()


def fcds_cache(*builders) -> Cache:
    cache = Cache(Renderer(rs.FILTER_CHAINS, DOMAIN, fcds=True))
    cache.replace(1, {b.id: b for b in builders})
    return cache


def snap(cache: Cache, type_url: str):
    return cache.snapshot(cache.view_for(None, VIEW_SPEC), type_url)


def decode(rendered, message):
    """A rendered resource as its proto (its sotw_field is one DiscoveryResponse.resources entry)."""
    [any_msg] = discovery_pb2.DiscoveryResponse.FromString(rendered.sotw_field).resources
    return message.FromString(any_msg.value)


def listener_of(cache: Cache) -> listener_pb2.Listener:
    [listener] = snap(cache, rs.LISTENER).resources.values()
    return decode(listener, listener_pb2.Listener)


def test_the_layout_is_three_types_in_make_before_break_order():
    cache = fcds_cache()
    assert cache.types == (rs.CLUSTER, rs.FILTER_CHAIN, rs.LISTENER)
    assert cache.depends_on(rs.LISTENER) == rs.FILTER_CHAIN and cache.depends_on(rs.FILTER_CHAIN) == rs.CLUSTER
    assert cache.depends_on(rs.CLUSTER) is None and cache.delta_only
    plain = Cache(Renderer(rs.FILTER_CHAINS, DOMAIN))
    assert plain.types == (rs.CLUSTER, rs.LISTENER) and plain.depends_on(rs.LISTENER) == rs.CLUSTER
    assert not plain.delta_only
    with pytest.raises(ValueError, match="FCDS"):
        Renderer(rs.SNI_CLUSTERS, DOMAIN, fcds=True)


def test_the_listener_names_chains_and_each_chain_its_cluster():
    a, b = builder("a"), builder("b")
    cache = fcds_cache(a, b)
    listener = listener_of(cache)
    assert [c.name for c in listener.filter_chains] == [rs.FCDS_STUB_CHAIN]
    assert listener.fcds_config.name == rs.BUILDER_LISTENER and listener.fcds_config.config_source.HasField("ads")
    assert [f.name for f in listener.listener_filters] == [rs.TLS_INSPECTOR]
    tree = listener.filter_chain_matcher.matcher_tree
    assert tree.input.name == rs.SERVER_NAME_INPUT
    assert sorted(tree.exact_match_map.map) == [sni("a"), sni("b")]
    assert snap(cache, rs.LISTENER).uses == {sni("a"), sni("b")}
    chains = snap(cache, rs.FILTER_CHAIN)
    assert sorted(chains.resources) == [sni("a"), sni("b")] and chains.uses == {sni("a"), sni("b")}
    assert chains.resources[sni("a")].uses == {sni("a")}
    chain = decode(chains.resources[sni("a")], listener_components_pb2.FilterChain)
    assert chain.name == sni("a") and [f.name for f in chain.filters] == [rs.TCP_PROXY]
    assert not chain.HasField("filter_chain_match"), "the listener's matcher picks the chain"


def test_no_builders_is_a_listener_whose_matcher_matches_nothing():
    listener = listener_of(fcds_cache())
    assert not listener.filter_chain_matcher.HasField("matcher_tree")
    assert listener.HasField("filter_chain_matcher"), "FCDS requires a filter chain matcher"
    assert [c.name for c in listener.filter_chains] == [rs.FCDS_STUB_CHAIN]


def test_a_known_sni_that_moves_touches_its_cluster_only():
    a, b = builder("a", ip="127.0.9.1"), builder("b")
    cache = fcds_cache(a, b)
    listener, chains, clusters = (snap(cache, t) for t in (rs.LISTENER, rs.FILTER_CHAIN, rs.CLUSTER))
    moved = builder("a", ip="127.0.9.2")
    cache.apply(2, [(a, moved)])
    assert snap(cache, rs.LISTENER) is listener, "the listener is not re-rendered"
    assert snap(cache, rs.FILTER_CHAIN) is chains, "the same chain bytes are no change"
    assert snap(cache, rs.CLUSTER) is not clusters


def test_a_new_sni_rejoins_the_matcher_from_cached_entries_and_renders_one_chain():
    builders = [builder(f"n{i}") for i in range(50)]
    cache = fcds_cache(*builders)
    renderer = cache.renderer
    entries = {bid: renderer._entries[bid][1] for bid in renderer._entries}
    chains = dict(snap(cache, rs.FILTER_CHAIN).resources)
    new = builder("new")
    cache.apply(2, [(None, new)])
    assert all(renderer._entries[bid][1] is entry for bid, entry in entries.items()), "entries re-encoded"
    after = snap(cache, rs.FILTER_CHAIN).resources
    assert all(after[name] is chain for name, chain in chains.items()) and sni("new") in after
    assert sni("new") in listener_of(cache).filter_chain_matcher.matcher_tree.exact_match_map.map


def test_following_changes_and_loading_whole_give_the_same_bytes():
    a, b, c = builder("a"), builder("b"), builder("c")
    followed = fcds_cache(a, b)
    for type_url in followed.types:
        snap(followed, type_url)  # the series exist, so they are advanced change by change
    followed.apply(2, [(None, c)])
    followed.apply(3, [(a, None)])
    whole = fcds_cache(b, c)
    for type_url in followed.types:
        got, want = snap(followed, type_url).resources, snap(whole, type_url).resources
        assert {n: r.version for n, r in got.items()} == {n: r.version for n, r in want.items()}, type_url


def test_fcds_flag_only_with_filter_chains(monkeypatch, capsys):
    monkeypatch.delenv("XDS_FCDS", raising=False)
    assert not config.from_args([]).fcds
    assert config.from_args(["--routing", rs.FILTER_CHAINS, "--fcds"]).fcds
    monkeypatch.setenv("XDS_FCDS", "1")
    assert config.from_args([]).fcds
    with pytest.raises(ConfigError, match="--fcds"):
        config.from_args(["--routing", rs.SNI_CLUSTERS])
    from xds_server.main import main

    assert main(["--routing", rs.ON_DEMAND, "--listen", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--fcds" in err


def bootstrap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(script("xdsctl")), "bootstrap", "--node-id", "edge", *args],
                          capture_output=True, text=True, timeout=60)


def test_the_fcds_bootstrap_is_delta_and_envoy_validates_it(tmp_path):
    run = bootstrap("--routing", rs.FILTER_CHAINS, "--fcds")
    assert run.returncode == 0, run.stderr
    data = yaml.safe_load(run.stdout)
    assert data["dynamicResources"]["adsConfig"]["apiType"] == "DELTA_GRPC"
    assert data["node"]["metadata"]["routing"] == rs.FILTER_CHAINS_FCDS
    path = tmp_path / "envoy.yaml"
    path.write_text(run.stdout)
    check = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    wrong = bootstrap("--routing", rs.SNI_CLUSTERS, "--fcds")
    assert wrong.returncode == 2 and "--fcds" in wrong.stderr and wrong.stderr.count("\n") == 1
