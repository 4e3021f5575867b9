"""``xds-server`` entry point."""
from __future__ import annotations

import asyncio
import contextlib
import logging

from shared import logs, metrics
from shared.connect import redact, redis_client
from shared.config import join_hostport, parse_hostport
from shared.runner import run_service
from shared.store import Store

from . import config, server
from .cache import Cache
from .follow import Follower
from .peers import ListenerDefaults, Registry
from .render import Renderer
from .status import StatusPublisher

log = logging.getLogger("xds_server")


async def serve(cfg: config.XdsConfig, stop: asyncio.Event) -> None:
    logs.setup(cfg.log_format, cfg.log_level)
    metrics.serve(cfg.metrics_listen)
    renderer = Renderer(cfg.routing, cfg.domain, connect_timeout=cfg.connect_timeout,
                        on_demand_timeout=cfg.on_demand_wait, poison=cfg.test_nack_builders)
    cache = Cache(renderer, region_scope=cfg.region_scope)
    registry = Registry(cache, ListenerDefaults(address=cfg.listener_address, port=cfg.listener_port))
    grpc_server, health, port = server.build(cache, registry, cfg)
    address = join_hostport(parse_hostport(cfg.listen)[0], port)
    await server.set_health(health, False)
    await grpc_server.start()
    log.info("replica %s serving ADS on %s (routing %s, region scope %s) from %r",
             cfg.replica_id, address, cfg.routing, cfg.region_scope, cfg.redis)
    async with contextlib.AsyncExitStack() as clients:
        client = await clients.enter_async_context(redis_client(cfg.redis.url, name=f"xds:{cfg.replica_id}"))
        store = Store(client, cfg.redis.keys)
        reader = store
        if cfg.redis_read_url:
            log.info("reading the builder set from %s; status goes to the primary", redact(cfg.redis_read_url))
            read_client = await clients.enter_async_context(
                redis_client(cfg.redis_read_url, name=f"xds-read:{cfg.replica_id}"))
            reader = Store(read_client, cfg.redis.keys)
        follower = Follower(reader, cache, primary=store, accept_reset_after=cfg.accept_reset_after)
        publisher = StatusPublisher(store, cache, registry, replica=cfg.replica_id, address=address,
                                    follower=follower, reads="replica" if cfg.redis_read_url else "primary")
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(follower.run()), tg.create_task(publisher.run())]
            loaded = tg.create_task(follower.loaded.wait())
            await asyncio.wait((loaded, tg.create_task(stop.wait())), return_when=asyncio.FIRST_COMPLETED)
            if follower.loaded.is_set():
                await server.set_health(health, True)
                log.info("ready: version %d", cache.version)
            await stop.wait()
            log.info("stopping: refusing new streams, letting Envoys reconnect elsewhere")
            await server.set_health(health, False)
            await grpc_server.stop(grace=1.0)
            for t in (*tasks, loaded):
                t.cancel()
        await publisher.withdraw()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    return run_service(lambda: config.from_args(argv), serve)


if __name__ == "__main__":
    raise SystemExit(main())
