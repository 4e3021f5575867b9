"""The poll loop: fetch, validate, diff against Redis, write one fenced step.

Only the leader polls and writes. It starts from what Redis holds (never
from an empty set), so a failover writes only the difference.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

from shared import supervise
from shared.errors import Fenced, SourceError, StoreMisuse, StoreUnavailable, VersionConflict
from shared.logs import LogOnce
from shared.model import Builder
from shared.store import Lease, SetSnapshot, Store

from . import metrics
from .diff import Planner, Rules, Validated, validate
from .election import Election, bounded
from .sources import Answer, Source

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Timing:
    interval: float = 0.1
    backoff: float = 1.0  # after a source or Redis error, with +-20% jitter
    verify_every: float = 0.5  # with nothing to write, compare Redis' version with the mirror this often


class Mirror:
    """What Redis holds, as of our last read or write."""

    def __init__(self, snap: SetSnapshot):
        self.version = snap.version
        self.builders: dict[str, Builder] = dict(snap.builders)

    def apply(self, version: int, upsert: list[Builder], remove: list[str]) -> None:
        for bid in remove:
            self.builders.pop(bid, None)
        for b in upsert:
            self.builders[b.id] = b
        self.version = version


def _some(ids, shown: int = 5) -> str:
    ids = list(ids)
    return (", ".join(ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")) or "none"


class Discoverer:
    def __init__(self, *, store: Store, source: Source, election: Election, rules: Rules, timing: Timing):
        self.store = store
        self.source = source
        self.election = election
        self.planner = Planner(rules)
        self.rules = rules
        self.timing = timing
        self.mirror: Mirror | None = None
        self._mirror_term = -1
        self._verified_at = 0.0  # monotonic time of the last check that Redis still holds our version
        self._corrupt: set[str] = set()  # ids whose record in Redis is unreadable
        self._log_once = LogOnce(log)
        self.last_error: str | None = None
        self.last_poll_at: float | None = None  # wall clock of the last successful poll
        self._validated: dict = {}  # raw record fields -> Builder | RecordError
        self._last_answer: Answer | None = None
        self._last_seen: Validated | None = None

    async def run(self) -> None:
        """Poll until cancelled; an unplanned exception in one poll never ends the loop."""
        await supervise.forever(self.step, loop="poll", crashes=metrics.LOOP_CRASHES, backoff=self.timing.backoff,
                                keeping="keeping the set in Redis as it is", on_crash=self._crashed)

    async def step(self) -> None:
        """As a standby, wait for leadership; as the leader, one poll and the wait until the next."""
        if self.election.lease() is None:
            self.mirror = None
            metrics.IS_LEADER.set(0)
            metrics.EPOCH.set(0)
            self.election.changed.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self.election.changed.wait()
            return
        started = time.monotonic()
        ok = await self.poll_once()
        # a fixed cadence: polls start every interval, however long the last one took
        delay = (self.timing.interval - (time.monotonic() - started) if ok
                 else self.timing.backoff * random.uniform(0.8, 1.2))
        await asyncio.sleep(max(0.0, delay))

    def _crashed(self, exc: BaseException) -> None:
        """A poll died half-way: forget what we believe Redis holds (the next poll loads it again)."""
        metrics.POLLS.labels("error").inc()
        self.mirror = None
        what, leaf = supervise.cause(exc)
        self.last_error = f"unexpected {what}: {leaf}"

    async def poll_once(self) -> bool:
        """One poll as leader; False when it failed and the caller should back off."""
        started = time.perf_counter()
        try:
            answer = await self.source.fetch()
        except SourceError as exc:
            metrics.POLLS.labels("error").inc()
            metrics.SOURCE_ERRORS.inc()
            self._error(f"source failed: {exc}; keeping the last good set, retrying in ~{self.timing.backoff:.1f}s")
            return False
        seen = self._validate(answer)
        for err in (*answer.rejected, *seen.rejected):
            metrics.REJECTED.labels(err.reason).inc()
            self._log_once.warning(f"{err.reason}:{err.detail}", "record skipped: %s", err)
        try:
            wrote = await self._write(seen)
        except StoreUnavailable as exc:
            metrics.POLLS.labels("error").inc()
            self.mirror = None
            self._error(f"Redis unavailable: {exc}; nothing written, retrying")
            return False
        except StoreMisuse as exc:
            metrics.POLLS.labels("error").inc()
            self.mirror = None
            self.last_error = str(exc)
            supervise.report_misuse(exc, metrics.OPERATOR_ERRORS, "nothing written: keeping the set in Redis "
                                    f"as it is, retrying in ~{self.timing.backoff:.1f}s", log)
            return False
        metrics.POLLS.labels("changed" if wrote else "unchanged").inc()
        self.last_poll_at = round(time.time(), 3)
        metrics.POLL_SECONDS.observe(time.perf_counter() - started)
        if self.last_error:
            log.info("recovered: polling normally again")
            self.last_error = None
        return True

    def _validate(self, answer: Answer) -> Validated:
        """Validation is most of a poll's CPU: skip it for an answer the source repeats,
        and for each record seen before (the cache holds at most ~2 answers' worth)."""
        if answer is self._last_answer and self._last_seen is not None:
            return self._last_seen
        if len(self._validated) > 2 * len(answer.records) + 1024:
            self._validated.clear()
        seen = validate(answer.records, self.rules, time.time(), cache=self._validated)
        self._last_answer, self._last_seen = answer, seen
        return seen

    @property
    def _command_timeout(self) -> float:
        return self.election.times.command_timeout

    def _error(self, msg: str) -> None:
        if msg != self.last_error:
            log.warning(msg)
        self.last_error = msg

    async def _verify(self, lease: Lease, mirror: Mirror) -> None:
        """With nothing to write, the version CAS would never notice that Redis lost our writes
        (a failover to a replica that had not received them): compare versions now and then,
        and drop the mirror when Redis holds another version, so the next poll reloads the set
        and writes the difference again. The same read counts the records: a set that changed
        under an unchanged version was edited by hand, and gets our set back."""
        now = time.monotonic()
        if now - self._verified_at < self.timing.verify_every:
            return
        current, size = await bounded(self.store.version_and_size(), self._command_timeout, "checking the set")
        self._verified_at = now
        version = mirror.version
        if current == version:
            if size != len(mirror.builders) + len(self._corrupt):
                await self._repair(lease, mirror, f"{size} records at version {version}, where the leader "
                                                  f"wrote {len(mirror.builders)}")
            return
        metrics.WRITES.labels("conflict").inc()
        if current < version:
            log.warning("Redis holds version %d, older than the %d we wrote: it lost acknowledged writes "
                        "(a failover to a replica that had not received them?); reloading the set and "
                        "writing the difference again", current, version)
        else:
            log.warning("Redis holds version %d, not the %d we wrote; reloading the set", current, version)
        self.mirror = None

    async def _repair(self, lease: Lease, mirror: Mirror, found: str) -> None:
        """Someone wrote the builder set without the leader (redis-cli HDEL/HSET: no version, no
        change entry). The replicas still serve what we wrote, so Redis gets exactly that back in
        one fenced write, whose change entry every replica applies; then DNS decides as usual."""
        metrics.SET_REPAIRS.inc()
        snap = await bounded(self.store.load(), self._command_timeout, "loading the set")
        upsert = [b for bid, b in mirror.builders.items() if snap.builders.get(bid) != b]
        remove = sorted((snap.builders.keys() | set(snap.corrupt)) - mirror.builders.keys())
        log.error("the builder set in Redis was changed by hand: %s (missing or altered: %s; not ours: %s). "
                  "Only the leader writes it; drop a builder with `xdsctl deregister --id ID`. "
                  "Rewriting it: restoring %d, removing %d records",
                  found, _some(b.id for b in upsert), _some(remove), len(upsert), len(remove))
        if not (upsert or remove) or not await self._commit(lease, upsert, remove, repairing=True):
            self.mirror = None  # nothing we can restore: reload the set and let DNS decide

    async def _write(self, seen) -> bool:
        lease = self.election.lease()
        if lease is None:
            return False
        if self.mirror is None or self._mirror_term != self.election.term:
            # Keyed on the term, not the epoch: after Redis restarts empty the
            # epoch starts again at 1 and may equal the one we held before.
            if self._mirror_term != self.election.term:
                self.planner = Planner(self.rules)  # grace clocks of an older term are stale
            term = self.election.term
            snap = await bounded(self.store.load(), self._command_timeout, "loading the set")
            self.mirror, self._mirror_term = Mirror(snap), term
            self._corrupt = set(snap.corrupt)
            if snap.corrupt:
                log.error("Redis holds %d unreadable builder records (%s); replacing or removing them",
                          len(snap.corrupt), ", ".join(sorted(snap.corrupt)[:5]))
            self.election.version_floor = max(self.election.version_floor, snap.version)
            metrics.IS_LEADER.set(1)
            metrics.EPOCH.set(lease.epoch)
            metrics.BUILDERS.set(len(snap.builders))
        plan = self.planner.plan(self.mirror.builders, seen, time.monotonic())
        metrics.HELD_REMOVALS.set(plan.held)
        if self._corrupt:  # not in the mirror, so the planner cannot see them
            plan.remove.extend(sorted(self._corrupt - seen.builders.keys()))
        if not plan:
            await self._verify(lease, self.mirror)
            return False
        return await self._commit(lease, plan.upsert, plan.remove)

    def _conflict(self, exc: VersionConflict) -> None:
        metrics.WRITES.labels("conflict").inc()
        if exc.actual < exc.expected:
            log.warning("write skipped: %s, older than what we wrote: it lost acknowledged writes "
                        "(a failover to a replica that had not received them?); reloading the set "
                        "and writing the difference again", exc)
        else:
            log.warning("write skipped: %s; reloading the set from Redis", exc)
        self.mirror = None

    async def _commit(self, lease: Lease, upsert: list[Builder], remove: list[str], *,
                      repairing: bool = False) -> bool:
        """One fenced write of the difference to the mirror; True when it was written.

        A write that changes nothing means Redis no longer holds the mirror (a record we would
        update or remove was deleted by hand): the mirror is restored first, the plan retried."""
        t0 = time.perf_counter()
        try:
            # floor: a failover that lost acknowledged writes sends Redis back to an older version;
            # the rewrite then gets a number past every one written, never a reused one.
            version = await bounded(self.store.apply(lease, self.mirror.version, upsert, remove,
                                                     floor=self.election.version_floor),
                                    self._command_timeout, "writing the set")
        except VersionConflict as exc:
            self._conflict(exc)
            return False
        except Fenced as exc:
            metrics.WRITES.labels("fenced").inc()
            self.election.step_down(str(exc))
            self.mirror = None
            return False
        metrics.WRITE_SECONDS.observe(time.perf_counter() - t0)
        if version == self.mirror.version and (upsert or remove):
            metrics.WRITES.labels("noop").inc()
            if not repairing:
                await self._repair(lease, self.mirror, f"a write of +{len(upsert)}/-{len(remove)} records "
                                                       f"changed nothing at version {version}")
            return False
        metrics.WRITES.labels("ok").inc()
        self.mirror.apply(version, upsert, remove)
        self._corrupt.clear()
        self.election.version_floor = max(self.election.version_floor, version)
        metrics.BUILDERS.set(len(self.mirror.builders))
        log.info("version %d: +%d/-%d builders (now %d)", version,
                 len(upsert), len(remove), len(self.mirror.builders))
        return True
