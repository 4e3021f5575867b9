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
from contextlib import contextmanager
from typing import Callable

NOT_YET = (Exception,)


class _Poll:
    """The deadline and the last "not yet" exception of one wait, shared by the sync and async loops."""

    def __init__(self, predicate, timeout: float, what: str | None, ignore):
        self.label = what or getattr(predicate, "__name__", "condition")
        self.timeout, self.ignore = timeout, ignore
        self.deadline = time.monotonic() + timeout
        self.last: BaseException | None = None

    @contextmanager
    def attempt(self):
        """Around one call of the predicate: an ignored exception is kept as the last one."""
        try:
            yield
            self.last = None
        except self.ignore as exc:
            self.last = exc

    def check_deadline(self) -> None:
        if time.monotonic() >= self.deadline:
            raise TimeoutError(f"{self.label} not true after {self.timeout:.1f}s") from self.last


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02,
               what: str | None = None, *, ignore: tuple[type[BaseException], ...] = NOT_YET):
    """Poll ``predicate`` every ``interval`` seconds until it returns something truthy; that value."""
    poll = _Poll(predicate, timeout, what, ignore)
    while True:
        with poll.attempt():
            if value := predicate():
                return value
        poll.check_deadline()
        time.sleep(interval)


async def async_wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02,
                           what: str | None = None, *, ignore: tuple[type[BaseException], ...] = NOT_YET):
    """``wait_until`` in a coroutine: ``predicate`` may return a value or an awaitable of one."""
    poll = _Poll(predicate, timeout, what, ignore)
    while True:
        with poll.attempt():
            value = predicate()
            if value := (await value if inspect.isawaitable(value) else value):
                return value
        poll.check_deadline()
        await asyncio.sleep(interval)


def seconds_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02,
                  what: str | None = None, **kw) -> float:
    """Seconds ``wait_until`` took: for benchmarks and for tests that report how long a change took."""
    t0 = time.monotonic()
    wait_until(predicate, timeout, interval, what, **kw)
    return time.monotonic() - t0
