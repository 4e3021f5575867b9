"""An Envoy's ACK reaches ``{xds}:envoys`` at once, not at the next heartbeat; replicas say how they route."""
from __future__ import annotations

import orjson

from shared.keys import Keys

from .harness import builder, eventually
from .test_sotw import sync
from .xds_client import CDS, LDS

KEYS = Keys()


def entry(redis_server, key: str, field: str) -> dict | None:
    with redis_server.client() as c:
        raw = c.hget(key, field)
    return orjson.loads(raw) if raw else None


async def test_an_ack_is_published_at_once_not_at_the_next_heartbeat(writer, replicas, clients, redis_server):
    await writer.put(builder("a"))
    # a heartbeat every minute: an entry within the waits below can only be the ACK's own publish
    replica = await replicas(replica_id="pub-1", publish_every=60.0, routing="sni_cluster", region_scope="local")
    ads = await clients(replica, node_id="envoy-p").sotw()
    await sync(ads, CDS, LDS)
    await eventually(lambda: entry(redis_server, KEYS.envoys, "envoy-p"), 3, "the first entry")
    for n in range(3):  # three in a row
        version = await writer.put(builder(f"n{n}"))
        resp = await ads.recv(CDS)
        await ads.ack(resp)
        await eventually(lambda: (entry(redis_server, KEYS.envoys, "envoy-p") or {}).get("acked", {}).get("cds")
                         == str(version), 10, f"the ACK of version {version} in Redis")
    status = entry(redis_server, KEYS.replicas, "pub-1")
    assert (status["routing"], status["region_scope"]) == ("sni_cluster", "local")
