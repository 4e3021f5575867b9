"""Running a service: logging, SIGTERM/SIGINT to graceful stop, exit codes; or in a task (``InTask``)."""
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


class InTask:
    """``start()``/``stop()`` and ``async with`` for a service whose ``run(stop)`` sets ``self.started``
    once it serves, as ``main`` runs it: tests and tools run it in a task. stop() is safe twice.
    A subclass sets ``self.started`` and names itself in ``name``; ``job`` may run something else."""

    name = "service"
    started: asyncio.Event
    _stop: asyncio.Event | None = None
    _task: asyncio.Task | None = None

    def job(self, stop: asyncio.Event) -> Awaitable[None]:
        return self.run(stop)

    async def start(self, timeout: float = 5.0):
        self._stop = asyncio.Event()
        self.started.clear()
        self._task = asyncio.get_running_loop().create_task(self.job(self._stop))
        started = asyncio.ensure_future(self.started.wait())
        await asyncio.wait((started, self._task), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not self.started.is_set():
            started.cancel()
            await self.stop()
            raise RuntimeError(f"{self.name} did not start within {timeout:.0f}s")
        return self

    async def stop(self) -> None:
        """Stop gracefully; safe to call twice."""
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            task, self._task = self._task, None
            await task

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()
