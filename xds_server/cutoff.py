"""Whether this replica's region is cut off from the primary, said at once and every few seconds.

A replica in a far region reads the builder set from a nearby Redis replica
(``--redis-read-url``) and writes its status to the primary. Cut off from the
primary, it keeps serving the last set it read (never read as deletions: the
follower keeps its snapshot), and an operator there must see that the set is
frozen, and since when. Every ``every`` seconds this asks:

- the primary: a PING, bounded (a partition holds the connection open and
  never answers);
- the read Redis: INFO replication (``master_link_status``,
  ``master_link_down_since_seconds``);
- the status publisher: since when its writes to the primary fail.

Anything cut: a WARNING at once, then every ``warn_every`` seconds, naming what
is cut since when and what is served ("serving version 12 with 40 builders
from redis://syd-replica:6379/0: its link to the primary is down since
...; status writes failing since ..."); when all is back, one INFO line.
Metrics: ``xds_primary_reachable`` (0/1), ``xds_read_master_link_down_seconds``.
"""
from __future__ import annotations

import asyncio
import logging
import time
from shared import supervise
from shared.connect import where
from shared.errors import StoreError, StoreMisuse, StoreUnavailable
from shared.replication import Link
from shared.store import Store

from . import metrics

log = logging.getLogger(__name__)


def utc(at: float) -> str:
    """A wall-clock time for log lines: '2026-12-05T23:59:01Z'."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


async def read_link(store: Store, timeout: float) -> Link:
    """The link of the Redis behind ``store``; a hang is StoreUnavailable."""
    try:
        async with asyncio.timeout(timeout):
            return Link.from_info(await store.replication())
    except TimeoutError as exc:
        raise StoreUnavailable(f"INFO replication: no answer within {timeout:.1f}s") from exc


class CutOff:
    def __init__(self, primary: Store, reader: Store | None, follower, publisher, *, every: float = 1.0,
                 warn_every: float = 5.0, timeout: float = 1.0):
        self.primary = primary
        self.reader = reader  # the --redis-read-url Redis, or None when we read the primary
        self.follower = follower
        self.publisher = publisher  # its ``failing_since`` (wall clock) or None
        self.every, self.warn_every, self.timeout = every, warn_every, timeout
        self.primary_down_since: float | None = None  # wall clock
        self.link = Link()
        self.cut_since: float | None = None  # monotonic
        self._warned_at = 0.0
        self._link_readable = True
        metrics.PRIMARY_REACHABLE.set(1)
        metrics.READ_LINK_DOWN.set(0)

    async def run(self) -> None:
        await supervise.forever(self.step, loop="cutoff", crashes=metrics.LOOP_CRASHES, backoff=self.every,
                                keeping="serving what we have")

    async def step(self) -> None:
        await asyncio.gather(self._probe_primary(), self._probe_link())
        self.report()
        await asyncio.sleep(self.every)

    async def _probe_primary(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.primary.ping()
        except (TimeoutError, StoreError):
            if self.primary_down_since is None:
                self.primary_down_since = time.time() - self.timeout
        else:
            self.primary_down_since = None
        metrics.PRIMARY_REACHABLE.set(0 if self.primary_down_since else 1)

    async def _probe_link(self) -> None:
        if self.reader is None or not self._link_readable:
            return
        try:
            self.link = await read_link(self.reader, self.timeout)
        except StoreMisuse as exc:  # NOPERM: the ACL user lacks +info
            self._link_readable = False
            log.error("cannot read INFO replication from %s (%s): %s; judging the primary by PING only",
                      where(self.reader.client), exc.code, exc.hint or exc)
        except StoreError as exc:
            log.debug("INFO replication not read: %s", exc)
        metrics.READ_LINK_DOWN.set(self.link.down_seconds)

    def cuts(self, now: float) -> list[str]:
        """What is cut, since when (wall clock), in words; empty when nothing is."""
        out = []
        if not self.link.up:
            out.append(f"its link to the primary ({self.link.master}) is down since "
                       f"{utc(now - self.link.down_seconds)} ({self.link.down_seconds:.0f}s)")
        if self.primary_down_since is not None:
            out.append(f"the primary ({where(self.primary.client)}) has not answered since "
                       f"{utc(self.primary_down_since)}")
        failing = getattr(self.publisher, "failing_since", None)
        if failing is not None:
            out.append(f"status writes failing since {utc(failing)}")
        return out

    def report(self) -> None:
        now, mono = time.time(), time.monotonic()
        cuts = self.cuts(now)
        if not cuts:
            if self.cut_since is not None:
                log.info("the primary is reachable again after %.1fs; %s", mono - self.cut_since,
                         self.follower.serving())
                self.cut_since = None
            return
        if self.cut_since is None:
            self.cut_since, self._warned_at = mono, 0.0
        if mono - self._warned_at < self.warn_every:
            return
        self._warned_at = mono
        source = where(self.reader.client) if self.reader is not None else where(self.primary.client)
        log.warning("cut off from the primary: %s from %s: %s; Envoys keep every route they have, nothing is "
                    "removed until the primary is back", self.follower.serving(), source, "; ".join(cuts))
