"""One ADS replica, wired in one place: the composition root that ``main`` and the tests enter.

``Replica(cfg).run(stop)`` owns every part (gRPC server, Redis clients, cache,
follower, status publisher) in one ``AsyncExitStack`` and runs the loops in
one ``TaskGroup``. Its exit path always runs, even when a task crashed:
health goes NOT_SERVING, the server stops accepting streams (Envoys reconnect
to another replica), the replica withdraws its status, the clients close.
``start()``/``stop()`` run the same ``run`` in a task, for tests and tools.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from shared.connect import redact, redis_client
from shared.addr import join_hostport, parse_hostport
from shared.runner import InTask
from shared.store import Store
from shared.status import READS_PRIMARY, READS_REPLICA

from . import server
from .cache import Cache
from .config import XdsConfig
from .cutoff import CutOff
from .follow import Follower
from .peers import Registry
from .render import ConnectRetry, ListenerSpec, Renderer
from .status import StatusPublisher

log = logging.getLogger("xds_server")


class Replica(InTask):
    """``run(stop)`` for ``main``; ``start()``/``stop()`` or ``async with`` for tests and tools."""

    def __init__(self, cfg: XdsConfig):
        self.cfg = cfg
        self.name = f"replica {cfg.replica_id}"
        renderer = Renderer(cfg.routing, cfg.domain, fcds=cfg.fcds, connect_timeout=cfg.connect_timeout,
                            on_demand_timeout=cfg.on_demand_wait, poison=cfg.poison,
                            retry=ConnectRetry(cfg.connect_attempts, cfg.connect_backoff, cfg.connect_backoff_max))
        self.cache = Cache(renderer, region_scope=cfg.region_scope, push_interval=cfg.push_interval,
                           listener=ListenerSpec(address=cfg.listener_address, port=cfg.listener_port))
        self.registry = Registry(self.cache)
        self.follower: Follower | None = None
        self.publisher: StatusPublisher | None = None
        self.cutoff: CutOff | None = None
        self.port = 0
        self.started = asyncio.Event()  # the port is bound and Redis clients exist

    @property
    def address(self) -> str:
        host, _ = parse_hostport(self.cfg.listen, any_port=True)
        return join_hostport(host, self.port)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; every part is released on the way out."""
        async with contextlib.AsyncExitStack() as stack:
            grpc_server, health = await self._serve(stack)
            await self._connect(stack)
            self.started.set()
            async with asyncio.TaskGroup() as tg:
                loops = [tg.create_task(part.run()) for part in (self.follower, self.publisher, self.cutoff)]
                ready = tg.create_task(self._ready_when_loaded(health))
                await stop.wait()
                log.info("stopping: refusing new streams, letting Envoys reconnect elsewhere")
                await server.set_health(health, False)
                await grpc_server.stop(grace=1.0)
                for task in (*loops, ready):
                    task.cancel()
        log.info("stopped")

    async def _serve(self, stack: contextlib.AsyncExitStack):
        grpc_server, health, self.port = server.build(self.cache, self.registry, self.cfg)
        await server.set_health(health, False)
        await grpc_server.start()
        stack.push_async_callback(grpc_server.stop, None)  # a crash skips the graceful stop: not this
        log.info("replica %s serving ADS on %s (routing %s%s, region scope %s) from %r", self.cfg.replica_id,
                 self.address, self.cfg.routing, " over FCDS, delta only" if self.cfg.fcds else "",
                 self.cfg.region_scope, self.cfg.redis)
        return grpc_server, health

    async def _connect(self, stack: contextlib.AsyncExitStack) -> None:
        cfg = self.cfg
        client = await stack.enter_async_context(redis_client(cfg.redis.url, name=f"xds:{cfg.replica_id}"))
        store = reader = Store(client, cfg.redis.keys)
        read_only: Store | None = None
        if cfg.redis_read_url:
            log.info("reading the builder set from %s; status goes to the primary", redact(cfg.redis_read_url))
            read_client = await stack.enter_async_context(
                redis_client(cfg.redis_read_url, name=f"xds-read:{cfg.replica_id}"))
            reader = read_only = Store(read_client, cfg.redis.keys)
        self.follower = Follower(reader, self.cache, primary=store, block_ms=cfg.follow_block_ms,
                                 backoff=cfg.follow_backoff, accept_reset_after=cfg.accept_reset_after)
        self.publisher = StatusPublisher(store, self.cache, self.registry, replica=cfg.replica_id,
                                         address=self.address, follower=self.follower, every=cfg.status_every,
                                         reads=READS_REPLICA if cfg.redis_read_url else READS_PRIMARY, tags=self._tags())
        self.cutoff = CutOff(store, read_only, self.follower, self.publisher)  # commands in flight: one connection each
        stack.push_async_callback(self.publisher.withdraw)  # runs before the clients close

    def _tags(self) -> dict:
        """Where this replica runs: the host, and the supervisor whose port it shares (--workers)."""
        tags = {"host": socket.gethostname()}
        if self.cfg.region:
            tags["region"] = self.cfg.region
        if self.cfg.worker_of:
            tags.update(workers=self.cfg.worker_of, worker=self.cfg.worker_index)
        return tags

    async def _ready_when_loaded(self, health) -> None:
        await self.follower.loaded.wait()
        await server.set_health(health, True)
        log.info("ready: version %d", self.cache.version)

