"""An Envoy's ACK reaches ``{xds}:envoys`` at once, not at the next heartbeat; replicas say how they route."""
from __future__ import annotations

import time

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


async def test_an_ack_is_published_within_a_fraction_of_the_heartbeat(writer, replicas, clients, redis_server):
    await writer.put(builder("a"))
    replica = await replicas(replica_id="pub-1", publish_every=3.0, routing="sni_cluster", region_scope="local")
    ads = await clients(replica, node_id="envoy-p").sotw()
    await sync(ads, CDS, LDS)
    await eventually(lambda: entry(redis_server, KEYS.envoys, "envoy-p"), 3, "the first entry")
    delays = []
    for n in range(3):  # three in a row: none can be a heartbeat that happened to fall right after the ACK
        version = await writer.put(builder(f"n{n}"))
        resp = await ads.recv(CDS)
        await ads.ack(resp)
        acked = time.monotonic()
        await eventually(lambda: (entry(redis_server, KEYS.envoys, "envoy-p") or {}).get("acked", {}).get("cds")
                         == str(version), 2.5, f"the ACK of version {version} in Redis")
        delays.append(time.monotonic() - acked)
    assert max(delays) < 0.3, delays  # ~10 ms here; a loaded machine gets a margin, the 3 s heartbeat none
    status = entry(redis_server, KEYS.replicas, "pub-1")
    assert (status["routing"], status["region_scope"]) == ("sni_cluster", "local")
