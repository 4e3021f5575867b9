"""The one polling helper: wait on an event (a log line, a port, a metric, a Redis key), bounded in time.

``wait_until`` polls a plain predicate, ``async_wait_until`` a plain or async one. Both return the
predicate's first truthy value and raise ``TimeoutError`` after ``timeout`` seconds. An exception
from the predicate counts as "not yet" (chained to the TimeoutError) unless ``ignore=()`` makes it
fail at once. Neither ever waits for time to pass on its own: there is no sleep to synchronise on.
"""
from __future__ import annotations

import asyncio
import inspect
import time
from typing import Callable

NOT_YET = (Exception,)


def _timeout(predicate, timeout: float, what: str | None, last: BaseException | None) -> TimeoutError:
    label = what or getattr(predicate, "__name__", "condition")
    exc = TimeoutError(f"{label} not true after {timeout:.1f}s")
    exc.__cause__ = last
    return exc


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02,
               what: str | None = None, *, ignore: tuple[type[BaseException], ...] = NOT_YET):
    """Poll ``predicate`` every ``interval`` seconds until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = None
        except ignore as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise _timeout(predicate, timeout, what, last)
        time.sleep(interval)


async def async_wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02,
                           what: str | None = None, *, ignore: tuple[type[BaseException], ...] = NOT_YET):
    """``wait_until`` in a coroutine: ``predicate`` may return a value or an awaitable of one."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            last = None
        except ignore as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise _timeout(predicate, timeout, what, last)
        await asyncio.sleep(interval)


def seconds_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02,
                  what: str | None = None, **kw) -> float:
    """Seconds ``wait_until`` took: for benchmarks and for tests that report how long a change took."""
    t0 = time.monotonic()
    wait_until(predicate, timeout, interval, what, **kw)
    return time.monotonic() - t0
