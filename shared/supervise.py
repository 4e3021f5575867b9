"""Loops that survive the unexpected (Kubernetes' ``wait.Until`` with ``HandleCrash``).

A poll, a follower step, a status write or one gRPC stream that raises
something unplanned (a bug, or a foreign error nobody translated) must never
end the process or silence its loop:

- ``forever(step, ...)`` awaits ``step()`` again and again. An unplanned
  exception is logged once per distinct cause (its type and the line that
  raised it) with its traceback, counted in ``<service>_loop_crashes_total
  {loop=...}``, and the loop goes on after a jittered backoff that doubles
  while the step keeps failing. The state a step works on (the last good set)
  is the caller's and is kept. Only cancellation ends the loop.
- ``report_crash`` is the same report for a caller that handles the
  exception itself (a gRPC stream ends that one stream, never the server).
- ``report_misuse`` logs a Redis refusal that an operator must fix
  (``StoreMisuse``: which key, what to do) as an error, once a minute per
  distinct cause, and counts it in ``<service>_redis_operator_errors_total
  {code=...}``.
"""
from __future__ import annotations

import asyncio
import logging
import random
import traceback
from pathlib import Path
from typing import Awaitable, Callable, NoReturn

from prometheus_client import Counter

from .errors import StoreMisuse
from .logs import LogOnce

log = logging.getLogger(__name__)
_crash_log = LogOnce(log)
_misuse_logs: dict[str, LogOnce] = {}  # logger name -> its LogOnce
MISUSE_EVERY = 60.0  # seconds: a refusal that lasts is logged again this often
MAX_BACKOFF = 10.0


def cause(exc: BaseException) -> tuple[str, BaseException]:
    """('ZeroDivisionError at loop.py:88 in poll_once', the exception) for the first leaf of a group."""
    frames = traceback.extract_tb(exc.__traceback__)
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
        frames = traceback.extract_tb(exc.__traceback__) or frames
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return f"{exc.__class__.__qualname__}{where}", exc


def report_crash(loop: str, exc: BaseException, crashes: Counter, next_step: str) -> None:
    """Count an unplanned exception of ``loop``; log it, with its traceback, once per distinct cause."""
    crashes.labels(loop).inc()
    what, leaf = cause(exc)
    if not _crash_log.error(f"{loop}:{what}", "%s: unexpected %s: %s; %s (logged once per cause, "
                            "counted in loop_crashes_total)", loop, what, leaf, next_step, exc_info=leaf):
        log.debug("%s: unexpected %s again: %s", loop, what, leaf)


def report_misuse(exc: StoreMisuse, errors: Counter, next_step: str, logger: logging.Logger = log) -> None:
    """Count a refusal an operator must fix; log it as an error (what, which key, the fix) once a minute."""
    errors.labels(exc.code).inc()
    once = _misuse_logs.get(logger.name)
    if once is None:
        once = _misuse_logs[logger.name] = LogOnce(logger, every=MISUSE_EVERY)
    cause_key = f"{exc.code}:{exc.key}" if exc.key else f"{exc.code}:{exc.what}"  # one culprit, one line
    if not once.error(cause_key, "%s; %s", exc, next_step):
        logger.debug("%s (again)", exc)


async def forever(step: Callable[[], Awaitable[object]], *, loop: str, crashes: Counter, backoff: float = 1.0,
                  max_backoff: float = MAX_BACKOFF, keeping: str | Callable[[], str] = "keeping the last good state",
                  on_crash: Callable[[BaseException], None] | None = None) -> NoReturn:
    """Await ``step()`` until cancelled; an unplanned exception is reported and the loop goes on.

    ``keeping`` (a text, or a function giving one) says what stays as it was; ``on_crash``
    lets the owner drop state the failed step may have left half-updated.
    """
    failures = 0
    while True:
        try:
            await step()
            failures = 0
        except Exception as exc:  # noqa: BLE001 - the point of this loop; CancelledError is not an Exception
            failures += 1
            delay = min(backoff * 2 ** (failures - 1), max_backoff) * random.uniform(0.8, 1.2)
            kept = keeping() if callable(keeping) else keeping
            report_crash(loop, exc, crashes, f"{kept}, running it again in {delay:.1f}s")
            if on_crash is not None:
                on_crash(exc)
            await asyncio.sleep(delay)
