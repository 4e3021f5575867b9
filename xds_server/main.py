"""``xds-server`` entry point: flags -> ``XdsConfig`` -> one ``Replica``, or a supervisor of N (``--workers``)."""
from __future__ import annotations

import asyncio
import gc
import sys

from shared import logs, metrics
from shared.runner import run_service

from . import config, workers
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


def build(argv: list[str]) -> config.XdsConfig:
    """The config, after the port check (a worker shares its supervisor's port on purpose)."""
    cfg = config.from_args(argv)
    if cfg.worker_of is None:
        workers.ensure_port_free(cfg.listen)
    return cfg


async def supervise(argv: list[str], cfg: config.XdsConfig, stop: asyncio.Event) -> None:
    logs.setup(cfg.log_format, cfg.log_level)
    await workers.Supervisor(cfg.workers, argv, workers.free_port(cfg.listen), cfg.metrics_listen).run(stop)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)

    def run(cfg: config.XdsConfig, stop: asyncio.Event):
        if cfg.workers > 1 and cfg.worker_of is None:
            return supervise(argv, cfg, stop)
        return serve(cfg, stop)

    return run_service(lambda: build(argv), run)


if __name__ == "__main__":
    raise SystemExit(main())
