"""One discoverer, wired in one place: the composition root that ``main`` and the tests enter.

``DiscovererService(cfg).run(stop)`` owns the Redis clients, the source, the
election, the poll loop, the intents reader and the status publisher. Its exit path always runs,
even when a task crashed: the lease is released (a standby takes over at
once instead of after the TTL), the status entry is withdrawn, the source
and the client are closed.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator

from shared.connect import redis_client
from shared.runner import InTask
from shared.store import Store

from . import status
from .config import DiscovererConfig
from .election import Election
from .intents import IntentReader
from .loop import PollLoop
from .rejections import Rejections
from .sources import Source
from .sources.file import FileSource
from .sources.fly import FlySource

log = logging.getLogger("discoverer")


def make_source(cfg: DiscovererConfig) -> Source:
    if cfg.source == "file":
        return FileSource(cfg.file)
    return FlySource(cfg.dns_server, timeout=cfg.dns_timeout, per_app=cfg.per_app, apps=cfg.rules.apps,
                     app_wanted=cfg.rules.wants_app, learn=bool(cfg.rules.app_patterns) or not cfg.rules.apps,
                     apps_refresh=cfg.apps_refresh, address_kinds=address_kinds(cfg.rules), check_others=True)


def address_kinds(rules) -> tuple[str, ...]:
    """The DNS types a builder address may have, by the allow-list: what to read of other apps' machines."""
    versions = {net.version for net in rules.allowed}
    return tuple(kind for kind, version in (("AAAA", 6), ("A", 4)) if version in versions)


def describe_builders(cfg: DiscovererConfig) -> str:
    """Which machines become builders, for the start-up line (operators check it first)."""
    rules = cfg.rules
    apps = sorted(rules.apps) + [p.pattern for p in rules.app_patterns]
    what = f"machines of the apps {', '.join(apps)}" if apps else "every record of the source"
    if rules.regions:
        what += f" in {', '.join(sorted(rules.regions))}"
    return what


class DiscovererService(InTask):
    """``run(stop)`` for ``main``; ``start()``/``stop()`` or ``async with`` for tests and tools (stop() is
    safe twice). ``wired()`` builds every part without running any, for tests that drive them step by
    step; ``start()`` inside it runs those parts. ``source`` replaces the one ``cfg`` names (tests)."""

    def __init__(self, cfg: DiscovererConfig, *, source: Source | None = None, status_every: float = status.EVERY):
        self.cfg = cfg
        self.name = f"discoverer {cfg.holder}"
        self.status_every = status_every
        self._source = source
        self.store: Store | None = None
        self.election: Election | None = None
        self.poll_loop: PollLoop | None = None
        self.intents: IntentReader | None = None
        self.rejections: Rejections | None = None
        self.tasks: list[asyncio.Task] = []
        self.started = asyncio.Event()  # every part is wired and running

    async def run(self, stop: asyncio.Event) -> None:
        """Wire every part, run them until ``stop`` is set, and release them all on the way out."""
        cfg = self.cfg
        log.info("starting as %s on %r, source %s; builders: %s", cfg.holder, cfg.redis, cfg.source,
                 describe_builders(cfg))
        async with self.wired():
            await self.serve(stop)
        log.info("stopped")

    async def serve(self, stop: asyncio.Event) -> None:
        """Run the wired parts (election, poll loop, intents reader, status publisher) until ``stop``."""
        election, disc = self.election, self.poll_loop
        async with asyncio.TaskGroup() as tg:
            self.tasks = [tg.create_task(election.run()), tg.create_task(disc.run()),
                          tg.create_task(self.intents.run()), tg.create_task(self.rejections.run()),
                          tg.create_task(status.publish(election, disc, self.status_every))]
            self.started.set()
            await stop.wait()
            for task in self.tasks:
                task.cancel()

    @contextlib.asynccontextmanager
    async def wired(self) -> AsyncIterator["DiscovererService"]:
        """Clients, store, source, election, poll loop and intents reader, built and connected. On the way
        out, crash or not: **the lease is released first**, then the status entry withdrawn, the source
        and the clients closed."""
        cfg = self.cfg
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(redis_client(cfg.redis.url, name=f"discoverer:{cfg.holder}"))
            self.store = store = Store(client, cfg.redis.keys, stream_maxlen=cfg.stream_maxlen)
            source = self._source or make_source(cfg)
            stack.push_async_callback(source.aclose)
            # the intents reader blocks on XREAD: a connection of its own
            intents_client = await stack.enter_async_context(
                redis_client(cfg.redis.url, name=f"discoverer-intents:{cfg.holder}"))
            self.intents = IntentReader(Store(intents_client, cfg.redis.keys),
                                        command_timeout=cfg.lease.command_timeout)
            self.election = election = Election(store, cfg.holder, cfg.lease)
            self.rejections = Rejections(store)
            self.poll_loop = PollLoop(store=store, source=source, election=election, rules=cfg.rules,
                                      timing=cfg.timing, intents=self.intents, rejections=self.rejections)
            stack.push_async_callback(status.withdraw, election)
            stack.push_async_callback(election.release)  # first on the way out, crash or not
            stack.callback(self._unwire)
            yield self

    def _unwire(self) -> None:
        self.store = self.election = self.poll_loop = self.intents = self.rejections = None

    def job(self, stop: asyncio.Event):
        """What ``start()`` runs in its task: the whole service, or inside ``wired()`` its parts."""
        return self.serve(stop) if self.election is not None else self.run(stop)
