"""Each discoverer's own status in Redis: ``{xds}:discoverers`` (holder -> JSON).

Leaders and standbys alike refresh their entry every second, and at once
(at most every ``GAP`` seconds) when their role changes or the leader writes, so
``redis-cli HGETALL {xds}:discoverers`` (or xdsctl) shows who leads, at which
epoch and version, when each last polled and what last failed. An entry whose
``updated_at`` is old belongs to a process that died; a graceful stop removes it.
Status is best effort: failing to write it never stops discovery.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from shared import supervise
from shared.connect import bounded
from shared.errors import StoreError, StoreMisuse
from shared.status import LEADER, STALE_AFTER, STANDBY, DiscovererStatus, read
from shared.store import Store

from . import metrics
from .election import Election
from .loop import PollLoop

log = logging.getLogger(__name__)

EVERY = 1.0
GAP = 0.05  # the least time between two writes of our entry, however often the role or the set changes


def snapshot(election: Election, disc: PollLoop) -> DiscovererStatus:
    lease = election.lease()
    mirror = disc.mirror if lease is not None else None
    return DiscovererStatus(
        role=LEADER if lease is not None else STANDBY,
        epoch=lease.epoch if lease is not None else None,
        version=mirror.version if mirror is not None else None,
        builders=len(mirror.builders) if mirror is not None else None,
        last_poll_at=disc.last_poll_at,
        last_error=disc.last_error,
        pid=os.getpid(),
        updated_at=round(time.time(), 3),
    )


async def publish(election: Election, disc: PollLoop, every: float = EVERY) -> None:
    """Refresh our entry every ``every`` seconds and whenever ``election.status_due`` is set (won, lost,
    released, written), and prune dead ones now and then, until cancelled; nothing that goes wrong ends it."""
    pruned = [0.0]  # monotonic time of the last prune
    await supervise.forever(lambda: _publish_once(election, disc, every, pruned), loop="status",
                            crashes=metrics.LOOP_CRASHES, backoff=every, keeping="status not written")


async def _publish_once(election: Election, disc: PollLoop, every: float, pruned: list[float]) -> None:
    store, holder = election.store, election.holder
    election.status_due.clear()  # before reading the state: a change while we write is published next round
    try:
        await bounded(store.put_status(store.keys.discoverers, {holder: snapshot(election, disc).to_json()}),
                      election.times.command_timeout, "writing status")
        if time.monotonic() - pruned[0] >= STALE_AFTER / 3:
            await bounded(prune(store), election.times.command_timeout, "pruning status")
            pruned[0] = time.monotonic()
    except StoreMisuse as exc:
        supervise.report_misuse(exc, metrics.OPERATOR_ERRORS, f"status not written, trying again in {every:g}s", log)
    except StoreError as exc:
        log.debug("status not written: %s", exc)
    await asyncio.sleep(GAP)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, every - GAP)):
            await election.status_due.wait()


async def prune(store: Store, now: float | None = None) -> list[str]:
    """Remove the entries of discoverers that stopped refreshing them (killed, not stopped)."""
    now = time.time() if now is None else now
    entries = read(await store.get_status(store.keys.discoverers), DiscovererStatus)
    stale = [k for k, v in entries.items() if v.stale(now)]
    if stale:
        await store.put_status(store.keys.discoverers, {}, stale=stale)
        log.info("removed the status of %d discoverer(s) silent for over %.0fs: %s", len(stale), STALE_AFTER,
                 ", ".join(sorted(stale)))
    return stale


async def withdraw(election: Election) -> None:
    """Remove our entry on a graceful stop."""
    store = election.store
    try:
        await bounded(store.put_status(store.keys.discoverers, {}, stale=[election.holder]),
                      election.times.command_timeout, "removing status")
    except StoreError as exc:
        log.debug("status not removed: %s", exc)
