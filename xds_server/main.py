"""``xds-server`` entry point: flags -> ``XdsConfig`` -> one ``Replica``."""
from __future__ import annotations

import asyncio
import gc

from shared import logs, metrics
from shared.runner import run_service

from . import config
from .replica import Replica


def tune_gc() -> None:
    """Fewer, cheaper collections: with the default thresholds the collector took 10-15% of the
    replica's CPU in a fan-out (the futures and coroutines of a write survive a young collection or
    two, and full collections rescan every object). What exists at startup (modules, descriptors)
    lives forever: frozen, it is never scanned again."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


async def serve(cfg: config.XdsConfig, stop: asyncio.Event) -> None:
    tune_gc()
    logs.setup(cfg.log_format, cfg.log_level)
    metrics.serve(cfg.metrics_listen)
    await Replica(cfg).run(stop)


def main(argv: list[str] | None = None) -> int:
    return run_service(lambda: config.from_args(argv), serve)


if __name__ == "__main__":
    raise SystemExit(main())
