"""One discoverer, wired in one place: the composition root that ``main`` and the tests enter.

``DiscovererService(cfg).run(stop)`` owns the Redis client, the source, the
election, the poll loop and the status publisher. Its exit path always runs,
even when a task crashed: the lease is released (a standby takes over at
once instead of after the TTL), the status entry is withdrawn, the source
and the client are closed.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from shared.connect import redis_client
from shared.store import Store

from . import status
from .config import DiscovererConfig
from .election import Election
from .intents import IntentReader
from .loop import Discoverer
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


class DiscovererService:
    def __init__(self, cfg: DiscovererConfig):
        self.cfg = cfg
        self.election: Election | None = None
        self.discoverer: Discoverer | None = None

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.cfg
        log.info("starting as %s on %r, source %s; builders: %s", cfg.holder, cfg.redis, cfg.source,
                 describe_builders(cfg))
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(redis_client(cfg.redis.url, name=f"discoverer:{cfg.holder}"))
            store = Store(client, cfg.redis.keys, stream_maxlen=cfg.stream_maxlen)
            source = make_source(cfg)
            stack.push_async_callback(source.aclose)
            # the intents reader blocks on XREAD: a connection of its own
            intents_client = await stack.enter_async_context(
                redis_client(cfg.redis.url, name=f"discoverer-intents:{cfg.holder}"))
            intents = IntentReader(Store(intents_client, cfg.redis.keys), command_timeout=cfg.lease.command_timeout)
            self.election = election = Election(store, cfg.holder, cfg.lease)
            rejections = Rejections(store)
            self.discoverer = disc = Discoverer(store=store, source=source, election=election,
                                                rules=cfg.rules, timing=cfg.timing, intents=intents,
                                                rejections=rejections)
            stack.push_async_callback(status.withdraw, election)
            stack.push_async_callback(election.release)  # first on the way out, crash or not
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(election.run()), tg.create_task(disc.run()), tg.create_task(intents.run()),
                         tg.create_task(rejections.run()),
                         tg.create_task(status.publish(election, disc))]
                await stop.wait()
                for task in tasks:
                    task.cancel()
        log.info("stopped")
