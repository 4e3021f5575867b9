"""An Envoy whose bootstrap asks for another routing (node metadata rs.META_ROUTING) than the replica
serves is refused visibly: FAILED_PRECONDITION naming both, a WARNING, a metric and its {xds}:envoys entry."""
from __future__ import annotations

import logging

import grpc
import pytest
from prometheus_client import REGISTRY

from shared import resources as rs

from .harness import builder, eventually
from .test_delta import dsync
from .test_sotw import sync
from .xds_client import CDS, LDS

MISMATCHES = "xds_routing_mismatches_total"


def mismatches() -> float:
    return REGISTRY.get_sample_value(MISMATCHES) or 0.0


@pytest.mark.parametrize("transport", ["sotw", "delta"])
async def test_a_bootstrap_for_another_routing_is_refused_visibly(writer, replicas, clients, store, caplog,
                                                                  transport):
    await writer.put(builder("a"))
    replica = await replicas(routing=rs.SNI_CLUSTERS)
    caplog.set_level(logging.WARNING, logger="xds_server")

    def connect(node_id: str, routing: str):
        client = clients(replica, node_id=node_id, metadata={rs.META_ROUTING: routing})
        return client.sotw() if transport == "sotw" else client.delta()

    before = mismatches()
    right = await connect("right-edge", rs.SNI_CLUSTERS)  # the guard lets a matching bootstrap through
    await (sync(right, CDS, LDS) if transport == "sotw" else dsync(right, CDS, LDS))
    assert mismatches() == before

    wrong = await connect("wrong-edge", rs.FILTER_CHAINS)
    await wrong.request(CDS)
    end = await wrong.wait_end()
    assert end.code == grpc.StatusCode.FAILED_PRECONDITION, end
    assert "'wrong-edge'" in end.details and "'filter_chains'" in end.details and "'sni_cluster'" in end.details
    assert mismatches() == before + 1
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "wrong-edge" in r.getMessage()]
    assert warned and "'filter_chains'" in warned[0] and "'sni_cluster'" in warned[0], warned

    async def refused():
        entry = (await store.get_status(store.keys.envoys)).get("wrong-edge") or {}
        return entry.get("refused")
    detail = await eventually(refused, what="the refusal in {xds}:envoys")
    assert "'filter_chains'" in detail["detail"]
