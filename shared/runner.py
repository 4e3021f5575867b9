"""Running a service: logging, SIGTERM/SIGINT to graceful stop, exit codes."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Awaitable, Callable

from .errors import ConfigError

log = logging.getLogger(__name__)


async def until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)``; SIGTERM or SIGINT sets ``stop``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await main(stop)


def run_service(build: Callable[[], object], main: Callable[[object, asyncio.Event], Awaitable[None]]) -> int:
    try:
        cfg = build()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(until_signalled(lambda stop: main(cfg, stop)))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    return 0
