"""``discoverer`` entry point."""
from __future__ import annotations

import asyncio
import logging

from shared import logs, metrics
from shared.connect import redis_client
from shared.runner import run_service
from shared.store import Store

from . import config, status
from .election import Election
from .intents import IntentReader
from .loop import Discoverer
from .sources import Source
from .sources.file import FileSource
from .sources.fly import FlySource

log = logging.getLogger("discoverer")


def make_source(cfg: config.DiscovererConfig) -> Source:
    if cfg.source == "file":
        return FileSource(cfg.file)
    return FlySource(cfg.dns_server, timeout=cfg.dns_timeout, per_app=cfg.per_app, apps=cfg.rules.apps,
                     app_wanted=cfg.rules.wants_app)


async def serve(cfg: config.DiscovererConfig, stop: asyncio.Event) -> None:
    logs.setup(cfg.log_format, cfg.log_level)
    metrics.serve(cfg.metrics_listen)
    log.info("starting as %s on %r, source %s", cfg.holder, cfg.redis, cfg.source)
    async with (redis_client(cfg.redis.url, name=f"discoverer:{cfg.holder}") as client,
                redis_client(cfg.redis.url, name=f"discoverer-intents:{cfg.holder}") as intents_client):
        store = Store(client, cfg.redis.keys, stream_maxlen=cfg.stream_maxlen)
        election = Election(store, cfg.holder, cfg.lease)
        # a client of its own: its blocking XREAD must not hold up the election's commands
        intents = IntentReader(Store(intents_client, cfg.redis.keys), command_timeout=cfg.lease.command_timeout)
        disc = Discoverer(store=store, source=make_source(cfg), election=election,
                          rules=cfg.rules, timing=cfg.timing, intents=intents)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(election.run()), tg.create_task(disc.run()), tg.create_task(intents.run()),
                     tg.create_task(status.publish(election, disc))]
            await stop.wait()
            for t in tasks:
                t.cancel()
        await election.release()
        await status.withdraw(election)
        await disc.source.aclose()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    return run_service(lambda: config.from_args(argv), serve)


if __name__ == "__main__":
    raise SystemExit(main())
