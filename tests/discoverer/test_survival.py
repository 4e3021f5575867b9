"""The discoverer survives the unexpected: a bug in one poll, a key of the wrong type, a lost Redis.

Each discoverer is a ``DiscovererService`` running its parts as tasks against a
real redis-server; each case keeps the set in Redis, logs the cause
once, counts it, and writes the next good answer.
"""
from __future__ import annotations

import contextlib
import logging

import pytest
from prometheus_client import REGISTRY

from harness.wait import async_wait_until
from shared.keys import Keys

from .test_loop import FakeSource, nodes, rec, routes  # noqa: F401 - nodes is a fixture

pytestmark = [pytest.mark.timeout(60)]
KEYS = Keys()


def count(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class FlakySource(FakeSource):
    """Raises something no source should (a bug) for ``failures`` polls, then answers again."""

    def __init__(self, records=()):
        super().__init__(records)
        self.failures = 0
        self.calls = 0

    async def fetch(self):
        self.calls += 1
        if self.failures:
            self.failures -= 1
            return {}["no such key"] if self.failures % 2 else 1 / 0
        return await super().fetch()


@contextlib.asynccontextmanager
async def running(node):
    """The node's service running its parts (election, poll loop, intents reader, status publisher) as
    ``discoverer`` runs them; yields their tasks."""
    async with node.service as service:
        yield service.tasks


async def wait(predicate, timeout: float = 5.0, what: str = "condition"):
    async def check():
        return predicate()
    return await async_wait_until(check, timeout, interval=0.01, what=what)


async def test_a_poll_that_raises_something_unplanned_keeps_the_set_and_the_loop(nodes, redis_server, caplog):
    source = FlakySource([rec(1)])
    a = await nodes("a", source)
    async with running(a) as tasks:
        await wait(lambda: set(routes(redis_server)) == {"b01.builders.internal"}, what="the first set written")
        crashes = count("discoverer_loop_crashes_total", loop="poll")
        source.records.append(rec(2))
        source.failures = 4  # ZeroDivisionError and KeyError, twice each
        calls = source.calls
        await wait(lambda: count("discoverer_loop_crashes_total", loop="poll") >= crashes + 2, what="two crashes")
        assert set(routes(redis_server)) == {"b01.builders.internal"}, "the set in Redis is kept"
        assert a.disc.last_error and "unexpected" in a.disc.last_error
        await wait(lambda: len(routes(redis_server)) == 2, what="the next good answer written")
        assert count("discoverer_loop_crashes_total", loop="poll") == crashes + 4
        assert source.calls >= calls + 5 and not any(t.done() for t in tasks), "the loop lives"
        await wait(lambda: a.disc.last_error is None, what="recovered")
    for kind in ("ZeroDivisionError", "KeyError"):
        logged = [r for r in caplog.records if r.exc_info and f"poll: unexpected {kind}" in r.getMessage()]
        assert len(logged) == 1, f"{kind}: logged once, with its traceback"
        assert "keeping the set in Redis as it is" in logged[0].getMessage()


@pytest.mark.parametrize("key", [KEYS.builders, KEYS.changes])
async def test_a_key_of_the_wrong_type_is_an_operator_error_and_deleting_it_recovers(
        nodes, redis_server, caplog, key):
    source = FakeSource([rec(1)])
    a = await nodes("a", source)
    async with running(a) as tasks:
        await wait(lambda: len(routes(redis_server)) == 1, what="the first set written")
        errors = count("discoverer_redis_operator_errors_total", code="WRONGTYPE")
        with redis_server.client() as c:
            c.delete(key)
            c.set(key, "x")  # by hand, or another program sharing the prefix
        source.records.append(rec(2))  # something to write
        await wait(lambda: count("discoverer_redis_operator_errors_total", code="WRONGTYPE") >= errors + 2,
                   what="the refusal counted, twice")
        logged = [r for r in caplog.records if r.levelno == logging.ERROR and key in r.getMessage()]
        assert len(logged) == 1, "logged once per cause, not at every retry"
        assert f"{key} holds a string, not the" in logged[0].getMessage()
        assert f"redis-cli DEL '{key}'" in logged[0].getMessage() and "nothing written" in logged[0].getMessage()
        assert key in a.disc.last_error and a.election.lease() is not None
        with redis_server.client() as c:
            c.delete(key)  # what the log line says to do
        await wait(lambda: {"b01.builders.internal", "b02.builders.internal"} <= set(routes(redis_server)),
                   what="the set written again")
        with redis_server.client() as c:
            await wait(lambda: c.hlen(KEYS.builders) == 2 and c.type(KEYS.changes) == b"stream",
                       what="the deleted key rebuilt")
        assert not any(t.done() for t in tasks)


async def test_a_status_key_of_the_wrong_type_does_not_stop_discovery(nodes, redis_server, caplog):
    with redis_server.client() as c:
        c.set(KEYS.discoverers, "x")
    a = await nodes("a", FakeSource([rec(1)]))
    async with running(a):
        await wait(lambda: len(routes(redis_server)) == 1, what="the set written")
        await wait(lambda: any(r.levelno == logging.ERROR and f"{KEYS.discoverers} holds a string" in r.getMessage()
                               for r in caplog.records), what="the refusal logged")
        with redis_server.client() as c:
            c.delete(KEYS.discoverers)
            await wait(lambda: c.hget(KEYS.discoverers, "a"), what="status written again")


async def test_redis_going_away_is_said_at_once_and_its_return_too(nodes, redis_server, caplog, monkeypatch):
    caplog.set_level(logging.INFO, "discoverer.election")
    a = await nodes("a", FakeSource([rec(1)]))
    monkeypatch.setattr(a.election.reachability, "every", 0.5)
    async with running(a) as tasks:
        await wait(lambda: count("discoverer_redis_up") == 1 and len(routes(redis_server)) == 1, what="running")
        redis_server.stop()
        await wait(lambda: count("discoverer_redis_up") == 0, 3, what="redis_up 0")
        await wait(lambda: sum("cannot reach Redis" in r.getMessage() for r in caplog.records) >= 2, 3,
                   what="said at once, then again")
        said = [r.getMessage() for r in caplog.records if "cannot reach Redis" in r.getMessage()]
        assert "still the leader for" in said[0] or "as a standby" in said[0], said[0]
        assert len(said) <= 4, "every 0.5 s here, not every attempt"
        redis_server.start()
        await wait(lambda: count("discoverer_redis_up") == 1, 5, what="redis_up 1 again")
        assert any("is reachable again" in r.getMessage() for r in caplog.records)
        assert not any(t.done() for t in tasks)
