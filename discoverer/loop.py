"""The poll loop: fetch, validate, diff against Redis, write one fenced step.

Only the leader polls and writes. It starts from what Redis holds (never
from an empty set), so a failover writes only the difference. Registration
intents (``discoverer.intents``) wake the loop between polls: they are applied
at once, with the last DNS answer, in one fenced write that also moves the
intents cursor, so a new leader resumes where the last one stopped.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

from shared import supervise
from shared.connect import bounded
from shared.errors import Fenced, SourceError, StoreMisuse, StoreUnavailable, VersionConflict
from shared.logs import LogOnce
from shared.model import Builder
from shared.outcomes import REJECTED
from shared.store import IntentWrite, Lease, SetSnapshot, Store, stream_id

from . import metrics
from .election import Election
from .intents import OPS, OUTCOME_TTL, IntentReader, parse_intent
from .plan import Plan, Planner
from .rejections import Rejections
from .rules import Rules
from .sources import Answer, Source
from .validate import Validated, validate

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Timing:
    interval: float = 0.1
    backoff: float = 1.0  # after a source or Redis error, with +-20% jitter
    verify_every: float = 0.5  # with nothing to write, compare Redis' version with the mirror this often
    intents_kept: float = 3600.0  # seconds applied intents stay in the stream (their outcomes: OUTCOME_TTL)


class Mirror:
    """What Redis holds, as of our last read or write."""

    def __init__(self, snap: SetSnapshot):
        self.version = snap.version
        self.builders: dict[str, Builder] = dict(snap.builders)
        self.cursor = snap.intents_cursor
        self.deregistered: dict[str, float] = dict(snap.deregistered)

    def apply(self, version: int, upsert: list[Builder], remove: list[str]) -> None:
        for bid in remove:
            self.builders.pop(bid, None)
        for b in upsert:
            self.builders[b.id] = b
        self.version = version

    def took(self, intents: IntentWrite) -> None:
        """The intents bookkeeping a write made: the cursor and the deregistered ids."""
        self.cursor = intents.cursor
        self.deregistered.update(intents.deregistered)
        for bid in intents.deregistration_ended:
            self.deregistered.pop(bid, None)


def _some(ids, shown: int = 5) -> str:
    ids = list(ids)
    return (", ".join(ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")) or "none"


class PollLoop:
    def __init__(self, *, store: Store, source: Source, election: Election, rules: Rules, timing: Timing,
                 intents: IntentReader | None = None, rejections: Rejections | None = None):
        self.store = store
        self.rejections = rejections  # None: rejections stay in the log and metrics only
        self.intents = intents  # None: this discoverer takes no intents (tests, tools)
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
        self._dns: Validated | None = None  # the last answer, None while the source fails

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
            if self.intents is not None:
                self.intents.stop()
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
        await self._idle(max(0.0, delay))

    def _crashed(self, exc: BaseException) -> None:
        """A poll died half-way: forget what we believe Redis holds (the next poll loads it again)."""
        metrics.POLLS.labels("error").inc()
        self.mirror = None
        what, leaf = supervise.cause(exc)
        self.last_error = f"unexpected {what}: {leaf}"

    async def _idle(self, seconds: float) -> None:
        """Wait for the next poll; meanwhile apply intents the moment they arrive."""
        if self.intents is None:
            await asyncio.sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        wake = self.intents.wake
        while (remaining := deadline - time.monotonic()) > 0:
            if not wake.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await wake.wait()
                continue
            wake.clear()
            if self.intents.pending and not await self.apply_intents():
                return

    async def apply_intents(self) -> bool:
        """One write from the pending intents and the last DNS answer; False when it failed."""
        if self.election.lease() is None:
            return False
        return await self._step(self._dns, reconcile=False) is not None

    async def poll_once(self) -> bool:
        """One poll as leader; False when it failed and the caller should back off."""
        started = time.perf_counter()
        try:
            answer = await self.source.fetch()
        except SourceError as exc:
            metrics.POLLS.labels("error").inc()
            metrics.SOURCE_ERRORS.inc()
            self._error(f"source failed: {exc}; keeping the last good set, retrying in ~{self.timing.backoff:.1f}s")
            self._dns = None
            if self.intents is not None and self.intents.pending:
                await self._step(None)  # a DNS outage does not hold up registrations
            return False
        seen = self._validate(answer)
        for err in (*answer.rejected, *seen.rejected):
            metrics.REJECTED.labels(err.reason).inc()
            self._log_once.warning(f"{err.reason}:{err.detail}", "record skipped: %s", err)
        if self.rejections is not None:
            self.rejections.note_answer(answer, seen)
        self._dns = seen
        wrote = await self._step(seen)
        if wrote is None:
            metrics.POLLS.labels("error").inc()
            return False
        metrics.POLLS.labels("changed" if wrote else "unchanged").inc()
        self.last_poll_at = round(time.time(), 3)
        metrics.POLL_SECONDS.observe(time.perf_counter() - started)
        if self.last_error:
            log.info("recovered: polling normally again")
            self.last_error = None
        return True

    async def _step(self, seen: Validated | None, reconcile: bool = True) -> bool | None:
        """One write; whether it changed anything, None when Redis failed or refused."""
        try:
            return await self._write(seen, reconcile)
        except StoreUnavailable as exc:
            self.mirror = None
            self._error(f"Redis unavailable: {exc}; nothing written, retrying")
        except StoreMisuse as exc:
            self.mirror = None
            self.last_error = str(exc)
            supervise.report_misuse(exc, metrics.OPERATOR_ERRORS, "nothing written: keeping the set in Redis "
                                    f"as it is, retrying in ~{self.timing.backoff:.1f}s", log)
        return None

    def _validate(self, answer: Answer) -> Validated:
        """Validation is most of a poll's CPU: skip it for an answer the source repeats,
        and for each record seen before (the cache holds at most ~2 answers' worth)."""
        if answer is self._last_answer and self._last_seen is not None:
            return self._last_seen
        if len(self._validated) > 2 * len(answer.records) + 1024:
            self._validated.clear()
        seen = validate(answer.records, self.rules, time.time(), cache=self._validated)
        seen.other_apps = answer.other_apps
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
        if not (upsert or remove) or not await self._commit(lease, Plan(upsert=upsert, remove=remove), repairing=True):
            self.mirror = None  # nothing we can restore: reload the set and let DNS decide

    async def _write(self, seen: Validated | None, reconcile: bool = True) -> bool:
        lease = self.election.lease()
        if lease is None:
            return False
        if self.mirror is None or self._mirror_term != self.election.term:
            await self._reload(lease)
        plan = self._plan(seen, reconcile)
        if not plan:
            await self._verify(lease, self.mirror)
            return False
        return await self._commit(lease, plan)

    def _plan(self, seen: Validated | None, reconcile: bool) -> Plan:
        wall = time.time()
        batch = [parse_intent(e, self.rules, wall) for e in self.intents.pending] if self.intents else []
        plan = self.planner.plan(self.mirror.builders, seen, time.monotonic(), wall=wall, intents=batch,
                                 deregistered=self.mirror.deregistered, reconcile=reconcile, known=self._last_seen)
        metrics.HELD_REMOVALS.set(plan.held)
        if self._corrupt:  # not in the mirror, so the planner cannot see them
            listed = seen.builders.keys() if seen is not None else set()
            plan.remove.extend(sorted(self._corrupt - listed))
        return plan

    def _conflict(self, exc: VersionConflict) -> None:
        metrics.WRITES.labels("conflict").inc()
        if exc.actual < exc.expected:
            log.warning("write skipped: %s, older than what we wrote: it lost acknowledged writes "
                        "(a failover to a replica that had not received them?); reloading the set "
                        "and writing the difference again", exc)
        else:
            log.warning("write skipped: %s; reloading the set from Redis", exc)
        self.mirror = None

    async def _commit(self, lease: Lease, plan: Plan, *, repairing: bool = False) -> bool:
        """One fenced write of the plan (its diff, and its intents' cursor and outcomes); True when written.

        A write that changes nothing means Redis no longer holds the mirror (a record we would
        update or remove was deleted by hand): the mirror is restored first, the plan retried."""
        intents = self._intent_write(plan)
        t0 = time.perf_counter()
        try:
            # floor: a failover that lost acknowledged writes sends Redis back to an older version;
            # the rewrite then gets a number past every one written, never a reused one.
            version = await bounded(self.store.apply(lease, self.mirror.version, plan.upsert, plan.remove,
                                                     floor=self.election.version_floor, touch=plan.touch,
                                                     intents=intents),
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
        if version == self.mirror.version and (plan.upsert or plan.remove):
            metrics.WRITES.labels("noop").inc()
            self._consumed(plan, version, intents)  # the script moved the cursor all the same
            if not repairing:
                await self._repair(lease, self.mirror, f"a write of +{len(plan.upsert)}/-{len(plan.remove)} "
                                                       f"records changed nothing at version {version}")
            return False
        metrics.WRITES.labels("ok").inc()
        self._written(plan, version, intents)
        return True

    async def _reload(self, lease) -> None:
        """Start from what Redis holds: a new term, or after Redis surprised us."""
        # Keyed on the term, not the epoch: after Redis restarts empty the
        # epoch starts again at 1 and may equal the one we held before.
        if self._mirror_term != self.election.term:
            self.planner = Planner(self.rules)  # grace clocks of an older term are stale
        term = self.election.term
        snap = await bounded(self.store.load(intents=self.intents is not None), self._command_timeout,
                             "loading the set")
        self.mirror, self._mirror_term = Mirror(snap), term
        if self.intents is not None:
            self.intents.start_at(self._cursor(snap.intents_cursor))  # resume where the last leader stopped
        self._corrupt = set(snap.corrupt)
        if snap.corrupt:
            log.error("Redis holds %d unreadable builder records (%s); replacing or removing them",
                      len(snap.corrupt), ", ".join(sorted(snap.corrupt)[:5]))
        self.election.version_floor = max(self.election.version_floor, snap.version)
        metrics.IS_LEADER.set(1)
        metrics.EPOCH.set(lease.epoch)
        metrics.BUILDERS.set(len(snap.builders))

    def _cursor(self, cursor: str) -> str:
        try:
            stream_id(cursor)
            return cursor
        except ValueError:
            now = f"{int(time.time() * 1000)}-0"
            log.error("the intents cursor in Redis is unreadable (%r); applying intents appended from now (%s) on, "
                      "older ones are left to DNS", cursor[:40], now)
            self.mirror.cursor = now
            return now

    def _intent_write(self, plan: Plan) -> IntentWrite | None:
        if not (plan.cursor or plan.deregistered or plan.deregistration_ended):
            return None
        cursor = plan.cursor or self.mirror.cursor
        kept_ms = stream_id(cursor)[0] - int(self.timing.intents_kept * 1000)
        return IntentWrite(cursor=cursor, outcomes=[(it.request, out) for it, out in plan.outcomes],
                           deregistered=plan.deregistered, deregistration_ended=plan.deregistration_ended,
                           ttl=OUTCOME_TTL,
                           trim_before=f"{kept_ms}-0" if plan.cursor and kept_ms > 0 else None)

    def _written(self, plan: Plan, version: int, intents: IntentWrite | None) -> None:
        self.mirror.apply(version, plan.upsert + plan.touch, plan.remove)
        self._corrupt.clear()
        self.election.version_floor = max(self.election.version_floor, version)
        metrics.BUILDERS.set(len(self.mirror.builders))
        self.election.status_due.set()
        if plan.upsert or plan.remove:
            log.info("version %d: +%d/-%d builders (now %d)", version,
                     len(plan.upsert), len(plan.remove), len(self.mirror.builders))
        self._consumed(plan, version, intents)

    def _consumed(self, plan: Plan, version: int, intents: IntentWrite | None) -> None:
        """The intents a write took: never read again, their outcomes reported."""
        if intents is not None:
            self.mirror.took(intents)
        if self.intents is not None and plan.cursor:
            self.intents.consumed(plan.cursor)
        self._report(plan, version)

    def _report(self, plan: Plan, version: int) -> None:
        now = time.time()
        for it, out in plan.outcomes:
            metrics.INTENTS.labels(it.op if it.op in OPS else "unknown", out["status"]).inc()
            metrics.INTENT_SECONDS.observe(max(0.0, now - stream_id(it.entry_id)[0] / 1000))
            if out["status"] == REJECTED:
                metrics.INTENTS_REJECTED.labels(out["reason"]).inc()
            if self.rejections is not None:
                self.rejections.note_intent(it, out)
            if it.error is not None:
                self._log_once.warning(f"intent:{it.error.reason}:{it.error.detail}",
                                       "intent %s rejected: %s; outcome at %s", it.entry_id, it.error,
                                       self.store.keys.outcome(it.request))
            elif out["status"] == REJECTED:
                log.warning("intent %s (request %s: %s %s) rejected: %s: %s", it.entry_id, it.request, it.op, it.id,
                            out["reason"], out["detail"])
            else:
                log.info("intent %s: %s %s %s at version %d", it.entry_id, it.op, it.id, out["status"], version)
        for bid in plan.deregistered_listed:
            metrics.LISTED_DEREGISTRATIONS.inc()
            log.warning("deregistered %s, which DNS still lists: its route is gone for %.0fs (a machine being "
                        "stopped; see --mass-deregistration-share)", bid, self.rules.confirm_grace)
        for line in plan.conflicts:
            metrics.INTENT_CONFLICTS.inc()
            log.warning("%s", line)
        for bid in plan.expired:
            metrics.UNCONFIRMED_EXPIRED.inc()
            log.warning("registration of %s not confirmed by DNS within %.0fs: removed (its provisioner may have "
                        "died after registering)", bid, self.rules.confirm_grace)
