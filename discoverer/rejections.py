"""The leader's recent rejections, kept in Redis for ``xdsctl explain``.

``{xds}:rejections`` is a hash: record id -> JSON ``{reason, detail, source, at}``
(``source`` "dns" or "intent"; ``at`` wall-clock seconds when it was first
rejected so). It holds what the leader's last DNS answer rejected or ignored
(another app, another region), and the intents it rejected in the last
``max_age`` seconds; at most ``limit`` of each.

Best effort and off the hot path: the poll loop hands over what it rejected
(``note_answer``, ``note_intent``: dictionary work only, and nothing at all
for an answer the source repeats); ``run`` writes what changed since its last
write, at most every ``every`` seconds. A write that fails is tried again
later and never fails a poll. Records without a usable id (unparseable DNS
text) cannot be looked up by id and are left to the log and the metric.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time

from shared import supervise
from shared.errors import RecordError, StoreError
from shared.model import MAX_SNI
from shared.outcomes import REJECTED
from shared.store import Store

from . import metrics

log = logging.getLogger(__name__)

DNS, INTENT = "dns", "intent"  # an entry's source
MAX_DETAIL = 200


def _subject(err: RecordError) -> str | None:
    """The id an operator would ask about; None for one that is empty, huge or not printable."""
    s = err.subject
    return s if s and len(s) <= MAX_SNI and s.isprintable() else None


def _entry(err: RecordError, source: str) -> dict:
    return {"reason": err.reason, "detail": err.detail[:MAX_DETAIL], "source": source}


class Rejections:
    def __init__(self, store: Store, *, limit: int = 1000, max_age: float = 3600.0, every: float = 0.5):
        self.store = store
        self.limit, self.max_age, self.every = limit, max_age, every
        self._written: dict[str, dict] = {}  # id -> entry, as we last wrote it
        self._pending: dict[str, dict] = {}  # id -> entry to write
        self._dropped: set[str] = set()  # ids to delete
        self._seen: object = None  # the last Validated noted
        self._adopted = False  # read what an earlier leader left, once
        self.due = asyncio.Event()

    def note_answer(self, answer, seen) -> None:
        """What one poll rejected (``answer.rejected``, ``seen.rejected``) or ignored (``seen.others``)."""
        if seen is self._seen:
            return
        self._seen = seen
        now = time.time()
        current: dict[str, dict] = {}
        for err in itertools.chain(answer.rejected, seen.rejected, seen.others):
            subject = _subject(err)
            if subject is not None and len(current) < self.limit:
                current.setdefault(subject, _entry(err, DNS))
        for subject, entry in current.items():
            self._put(subject, entry, now)
        for subject, entry in [*self._written.items(), *self._pending.items()]:
            if entry.get("source") == DNS and subject not in current:
                self._drop(subject)

    def note_intent(self, intent, outcome: dict) -> None:
        """An intent's outcome; only a rejection is kept."""
        if outcome.get("status") != REJECTED:
            return
        err = RecordError(outcome.get("reason", ""), outcome.get("detail", ""), subject=intent.id)
        subject = _subject(err)
        if subject is not None and len(self._pending) < 2 * self.limit:  # Redis down for long: keep a bounded backlog
            self._put(subject, {**_entry(err, INTENT), "entry": intent.entry_id}, time.time())

    def _put(self, subject: str, entry: dict, now: float) -> None:
        old = self._pending.get(subject) or self._written.get(subject)
        if old is not None and all(old.get(k) == v for k, v in entry.items()):
            return  # only on change: the first sighting's ``at`` stays
        self._pending[subject] = {**entry, "at": round(now, 3)}
        self._dropped.discard(subject)
        self.due.set()

    def _drop(self, subject: str) -> None:
        self._pending.pop(subject, None)
        self._dropped.add(subject)
        self.due.set()

    async def run(self) -> None:
        await supervise.forever(self.step, loop="rejections", crashes=metrics.LOOP_CRASHES, backoff=self.every,
                                keeping="rejections not recorded")

    async def step(self) -> None:
        """Write what changed (then wait ``every``), or wait until something did or is due to age out."""
        try:
            async with asyncio.timeout(self.every * 4):
                await self.due.wait()
        except TimeoutError:
            pass
        self.due.clear()
        self._age(time.time())
        if self._pending or self._dropped:
            try:
                await self.write()
            except StoreError as exc:
                log.debug("rejections not recorded (trying again): %s", exc)
                self.due.set()
        await asyncio.sleep(self.every)

    def _age(self, now: float) -> None:
        """Intent rejections older than ``max_age``; beyond ``limit`` of them, the oldest."""
        intents = sorted(((e.get("at", 0), s) for s, e in self._written.items() if e.get("source") == INTENT),
                         reverse=True)
        for n, (at, subject) in enumerate(intents):
            if n >= self.limit or now - at > self.max_age:
                self._drop(subject)

    async def write(self) -> None:
        if not self._adopted:
            await self._adopt()
        pending, dropped = dict(self._pending), set(self._dropped)
        await self.store.put_status(self.store.keys.rejections, pending, stale=dropped)
        for subject in dropped:
            self._written.pop(subject, None)
        self._written.update(pending)
        for subject in pending:
            if self._pending.get(subject) is pending[subject]:
                del self._pending[subject]
        self._dropped -= dropped

    async def _adopt(self) -> None:
        """Once per process: keep an earlier leader's intent rejections, drop its DNS ones (ours replace them)."""
        existing = await self.store.get_status(self.store.keys.rejections)
        for subject, entry in existing.items():
            if subject in self._pending or subject in self._dropped:
                continue
            if entry.get("source") == INTENT:
                self._written[subject] = entry
            else:
                self._dropped.add(subject)
        self._adopted = True
