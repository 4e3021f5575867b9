"""``discoverer`` entry point: flags -> ``DiscovererConfig`` -> one ``DiscovererService``."""
from __future__ import annotations

import asyncio

from shared import logs, metrics
from shared.runner import run_service

from . import config
from .service import DiscovererService


async def serve(cfg: config.DiscovererConfig, stop: asyncio.Event) -> None:
    logs.setup(cfg.log_format, cfg.log_level)
    metrics.serve(cfg.metrics_listen)
    await DiscovererService(cfg).run(stop)


def main(argv: list[str] | None = None) -> int:
    return run_service(lambda: config.from_args(argv), serve)


if __name__ == "__main__":
    raise SystemExit(main())
