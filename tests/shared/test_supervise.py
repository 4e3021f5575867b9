"""shared.supervise: a loop that survives the unexpected, and only cancellation ends it."""
from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry, Counter

from shared import supervise
from shared.errors import StoreMisuse


@pytest.fixture
def counter():
    return Counter("test_loop_crashes_total", "crashes", ["loop"], registry=CollectorRegistry())


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """The back-off delays the loop asks for, by its own arithmetic, not by a clock; each waits 0 s."""
    asked: list[float] = []
    real = asyncio.sleep

    async def sleep(delay, result=None):
        asked.append(delay)
        return await real(0, result)
    monkeypatch.setattr(supervise.asyncio, "sleep", sleep)
    return asked


def crashes(counter, loop: str) -> float:
    return counter.labels(loop)._value.get()


async def test_a_step_that_raises_is_counted_logged_once_and_run_again(counter, caplog, sleeps):
    calls = []

    async def step():
        calls.append(asyncio.get_running_loop().time())
        if len(calls) <= 3:
            raise ZeroDivisionError("a bug")
        if len(calls) == 6:
            raise asyncio.CancelledError()  # as if the task were cancelled here

    with pytest.raises(asyncio.CancelledError):
        await supervise.forever(step, loop="unit", crashes=counter, backoff=0.02, keeping="keeping the set")
    assert len(calls) == 6 and crashes(counter, "unit") == 3
    logged = [r for r in caplog.records if "unit: unexpected ZeroDivisionError" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info and logged[0].levelno == logging.ERROR
    assert "test_supervise.py" in logged[0].getMessage() and "keeping the set" in logged[0].getMessage()
    assert len(sleeps) == 3 and sleeps[0] >= 0.016 and sleeps[2] >= 0.064, f"backs off, doubling: {sleeps}"


async def test_the_backoff_resets_after_a_good_step_and_is_capped(counter, sleeps):
    outcomes = iter([1, 1, 1, 1, 0, 1, None])
    calls = []

    async def step():
        calls.append(asyncio.get_running_loop().time())
        outcome = next(outcomes)
        if outcome is None:
            raise asyncio.CancelledError()
        if outcome:
            raise RuntimeError("again")

    with pytest.raises(asyncio.CancelledError):
        await supervise.forever(step, loop="cap", crashes=counter, backoff=0.02, max_backoff=0.04)
    assert len(sleeps) == 5 and crashes(counter, "cap") == 5
    assert max(sleeps) <= 0.04 * 1.2 and sleeps[3] >= 0.04 * 0.8, f"capped at 0.04 s (+-20%): {sleeps}"
    assert sleeps[4] <= 0.02 * 1.2, f"reset after the good step: {sleeps}"


async def test_cancelling_the_task_ends_the_loop_at_once(counter):
    running = asyncio.Event()

    async def step():
        running.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(supervise.forever(step, loop="cancel", crashes=counter))
    await asyncio.wait_for(running.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)


def test_the_cause_of_a_group_is_its_first_leaf():
    try:
        raise ExceptionGroup("tg", [KeyError("k")])
    except ExceptionGroup as exc:
        what, leaf = supervise.cause(exc)
    assert isinstance(leaf, KeyError) and what.startswith("KeyError at test_supervise.py:")


def test_a_misuse_is_logged_once_per_culprit_and_always_counted(caplog):
    errors = Counter("test_operator_errors_total", "errors", ["code"], registry=CollectorRegistry())
    logger = logging.getLogger("tests.misuse")
    for what in ("loading", "following", "loading"):
        exc = StoreMisuse("WRONGTYPE", what, "WRONGTYPE ...", keys=("{t}:k",), key="{t}:k", hint="delete it")
        supervise.report_misuse(exc, errors, "retrying", logger)
    assert errors.labels("WRONGTYPE")._value.get() == 3
    logged = [r for r in caplog.records if r.name == "tests.misuse" and r.levelno == logging.ERROR]
    assert len(logged) == 1 and "delete it; retrying" in logged[0].getMessage()
