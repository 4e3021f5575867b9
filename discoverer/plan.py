"""Turn a source answer and registration intents into the next write: pure, no I/O.

Additions and updates apply at once. A removal waits ``grace`` seconds of
continuous absence so one missing answer does not flap a route. A plan that
would remove more than ``mass_share`` of the set is held until the same
condition has lasted ``mass_hold`` seconds.

Intents (``discoverer.intents``) and DNS, reconciled:
- a registered builder is routed at once, as ``source`` "intent"; when DNS
  lists it, DNS owns it (``source`` "dns", removed by the absence rules above);
  one DNS has not listed ``confirm_grace`` seconds after its first registration
  is removed (its provisioner may have died after registering); registering it
  again does not restart that grace, and at most ``max_unconfirmed`` such
  registrations are routed at once;
- a registration is rejected when the last DNS answer lists its id or its
  address as something else: a machine of an app that is not a builder app,
  the id at another address, the address under another id (``check_register``);
- a deregistered builder goes at once, and DNS answers that still list it are
  ignored for ``confirm_grace`` seconds (DNS lags); deregistering more than
  ``mass_deregistration_share`` of the builders DNS lists within that time is
  held: those intents are rejected, DNS removes a machine that really stops;
- where DNS and an earlier registration disagree on a builder's address, DNS
  wins (a conflict, reported in ``Plan.conflicts``).
Clocks: grace and mass-removal times are monotonic (in memory); registration
and deregistration times are wall clock, because they are stored in Redis and
a new leader must honour them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from shared.errors import RecordError
from shared.model import SOURCE_DNS, Builder
from shared.outcomes import APPLIED, REJECTED

from .intents import REGISTER, Intent
from .outcomes import mark_superseded, outcome
from .rules import Rules, over_share
from .validate import Validated

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Plan:
    upsert: list[Builder] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    held: int = 0  # removals held back by the mass-removal guard
    touch: list[Builder] = field(default_factory=list)  # bookkeeping changes only (source, registered_at)
    expired: list[str] = field(default_factory=list)  # registrations DNS never confirmed (in ``remove``)
    conflicts: list[str] = field(default_factory=list)  # DNS and an intent disagreed: what happened
    cursor: str | None = None  # the last intent entry this plan consumes
    outcomes: list[tuple[Intent, dict]] = field(default_factory=list)
    deregistered: dict[str, float] = field(default_factory=dict)  # id -> wall clock until DNS may not re-add it
    deregistration_ended: list[str] = field(default_factory=list)  # ids DNS may add again
    deregistered_listed: list[str] = field(default_factory=list)  # deregistered while DNS lists them

    def __bool__(self) -> bool:
        return bool(self.upsert or self.remove or self.touch or self.cursor or self.deregistration_ended)


def check_register(b: Builder, known: Validated | None, rules: Rules) -> RecordError | None:
    """Why the last DNS answer forbids routing ``b`` as registered, or None (also when DNS does not know it)."""
    if known is None:
        return None
    by_id, at = known.ids.get(b.id), known.addresses.get(b.address)
    if by_id is not None and not rules.wants_app(by_id.app):
        return RecordError("id_of_other_app", f"DNS lists {b.id} as a machine of app {by_id.app!r}")
    if at is not None and not rules.wants_app(at.app):
        return RecordError("address_of_other_app", f"DNS lists {b.address} as {at.id} of app {at.app!r}")
    if b.address in known.other_apps:
        return RecordError("address_of_other_app", f"DNS lists {b.address} as a machine of app "
                                                   f"{known.other_apps[b.address]!r}")
    if by_id is not None and by_id.address != b.address:
        return RecordError("id_at_other_address", f"DNS lists {b.id} at {by_id.address}")
    if at is not None and at.id != b.id:
        return RecordError("address_of_other_id", f"DNS lists {b.address} as {at.id}")
    if by_id is not None and by_id != b:
        return RecordError("dns_conflict", f"DNS lists {b.id} as {by_id.app} in {by_id.region} at {by_id.endpoint}")
    return None


@dataclass(slots=True)
class _Batch:
    """One plan's working state."""

    target: dict[str, Builder]
    deregistered: set[str]  # ids deregistered now (DNS may not add them)
    seen: Validated | None  # this poll's answer (None: the source failed)
    known: Validated | None  # the last good answer
    wall: float
    plan: Plan
    unconfirmed: int | None = None  # registrations in target DNS does not list, counted when first needed


@dataclass(slots=True)
class Planner:
    """Remembers since when each id has been missing, since when a mass removal lasts, and when each
    id DNS has not listed was first registered."""

    rules: Rules
    missing_since: dict[str, float] = field(default_factory=dict)
    mass_since: float | None = None
    first_registered: dict[str, float] = field(default_factory=dict)  # id -> wall clock, until DNS lists it
    flood_logged: bool = False

    def plan(self, current: dict[str, Builder], seen: Validated | None, now: float, *, wall: float | None = None,
             intents: list[Intent] = (), deregistered: dict[str, float] | None = None,
             reconcile: bool = True, known: Validated | None = None) -> Plan:
        """The next write. ``seen`` None: the source failed (no DNS-based change, no expiry).
        ``now`` is monotonic; ``wall`` (default ``now``) the wall clock of registrations.
        ``reconcile`` False (intents between polls): ``seen`` was planned at its poll already,
        so only the intents are, checked against it. ``known`` (default ``seen``): the last good
        DNS answer, what registrations are checked against while the source fails."""
        wall = now if wall is None else wall
        deregistered = deregistered or {}
        now_deregistered = {bid for bid, until in deregistered.items() if until > wall}
        plan = Plan(deregistration_ended=[bid for bid in deregistered if bid not in now_deregistered])
        batch = _Batch(dict(current), now_deregistered, seen, seen if known is None else known, wall, plan)
        if seen is not None and reconcile:
            self._from_source(current, seen, now, batch)
        for it in intents:
            plan.cursor = it.entry_id
            if it.error is not None:
                plan.outcomes.append((it, outcome(it, wall, REJECTED, it.error)))
            elif it.op == REGISTER:
                self._register(it, batch)
            else:
                self._deregister(it, batch)
        mark_superseded(plan.outcomes, batch.target)
        _diff(current, batch.target, plan)
        return plan

    def _from_source(self, current: dict[str, Builder], seen: Validated, now: float, batch: _Batch) -> None:
        listed, target, plan = seen.builders, batch.target, batch.plan
        for bid, b in listed.items():
            if bid in batch.deregistered:
                continue  # deregistered: DNS still lists it for a while
            old = current.get(bid)
            if old is b:
                continue  # the record validated when it was written: unchanged, and a DNS one
            if old is None:
                target[bid] = b
            elif old != b:
                if old.unconfirmed:
                    plan.conflicts.append(f"DNS lists {bid} at {b.endpoint}, its registration said {old.endpoint}: "
                                          "DNS wins")
                target[bid] = replace(b, seen_at=old.seen_at, registered_at=old.registered_at)
            elif old.unconfirmed:
                target[bid] = replace(old, source=SOURCE_DNS)  # confirmed: DNS owns it from now on
        for bid in [bid for bid in self.first_registered if bid in listed]:
            del self.first_registered[bid]
        for bid in list(self.missing_since):
            if bid in listed or bid not in current or current[bid].unconfirmed:
                del self.missing_since[bid]
        due = self._due(current, seen, now, batch)
        removals = self._guard(due, len(current), now)
        plan.held = len(due) - len(removals)
        for bid in (*removals, *plan.expired):
            target.pop(bid, None)

    def _due(self, current: dict[str, Builder], seen: Validated, now: float, batch: _Batch) -> list[str]:
        """Ids missing for the grace; registrations past the confirm grace go to ``plan.expired``."""
        due = []
        for bid, old in current.items():
            if (bid in seen.builders and bid not in batch.deregistered) or bid in seen.uncertain:
                continue
            if old.unconfirmed:
                if batch.wall - old.registered_at >= self.rules.confirm_grace:
                    batch.plan.expired.append(bid)
                continue
            since = self.missing_since.setdefault(bid, now)
            if now - since >= self.rules.grace:
                due.append(bid)
        return due

    def _register(self, it: Intent, batch: _Batch) -> None:
        b, target, plan = it.builder, batch.target, batch.plan
        listed = batch.seen.builders.get(b.id) if batch.seen is not None else None
        error = check_register(b, batch.known, self.rules) or self._sni_taken(b, target)
        if error is None and listed is None:
            error = self._unconfirmed_cap(b, target.get(b.id), batch)
        if error is not None:
            if error.reason == "id_at_other_address":
                plan.conflicts.append(f"intent {it.entry_id} registers {b.id} at {b.endpoint}, {error.detail}: "
                                      "DNS wins")
            plan.outcomes.append((it, outcome(it, batch.wall, REJECTED, error)))
            return
        if b.id in batch.deregistered:
            batch.deregistered.discard(b.id)
            plan.deregistered.pop(b.id, None)
            plan.deregistration_ended.append(b.id)
        old = target.get(b.id)
        if listed is not None:  # DNS lists it just so: DNS owns it
            if old is None or old != listed:
                target[b.id] = listed
            elif old.unconfirmed:
                target[b.id] = replace(old, source=SOURCE_DNS)
        elif old is None or old != b or not old.unconfirmed:  # a fresh registration
            first = self.first_registered.setdefault(b.id, batch.wall)
            target[b.id] = replace(b, registered_at=first, seen_at=old.seen_at if old == b else b.seen_at)
            batch.unconfirmed += 0 if old is not None and old.unconfirmed else 1
        plan.outcomes.append((it, outcome(it, batch.wall, APPLIED, builder=target[b.id])))

    @staticmethod
    def _sni_taken(b: Builder, target: dict[str, Builder]) -> RecordError | None:
        owner = next((o.id for o in target.values() if o.sni == b.sni and o.id != b.id), None)
        return None if owner is None else RecordError("duplicate_sni", f"{b.sni} is {owner}'s")

    def _unconfirmed_cap(self, b: Builder, old: Builder | None, batch: _Batch) -> RecordError | None:
        """Bounded trust in what DNS does not list: for ``confirm_grace`` from an id's first registration
        (registering again does not extend it), and ``max_unconfirmed`` of them at once."""
        again = old is not None and old.unconfirmed
        first = self.first_registered.get(b.id)
        if again:
            first = old.registered_at if first is None else min(first, old.registered_at)
            self.first_registered[b.id] = first
        if first is not None and batch.wall - first >= self.rules.confirm_grace:
            return RecordError("unconfirmed_too_long", f"first registered {batch.wall - first:.0f}s ago and not "
                               f"listed by DNS since; registering again does not extend --confirm-grace "
                               f"({self.rules.confirm_grace:g}s)")
        if batch.unconfirmed is None:
            batch.unconfirmed = sum(1 for o in batch.target.values() if o.unconfirmed)
            self._forget_old_registrations(batch.wall)
        if not again and batch.unconfirmed >= self.rules.max_unconfirmed:
            return RecordError("too_many_unconfirmed", f"{batch.unconfirmed} registrations DNS does not list yet "
                               f"are routed (--max-unconfirmed {self.rules.max_unconfirmed})")
        return None

    def _forget_old_registrations(self, wall: float) -> None:
        """Bounded memory: first registrations older than ``unconfirmed_memory``, and the oldest past a size."""
        horizon = wall - self.rules.unconfirmed_memory
        limit = 16 * self.rules.max_unconfirmed + 1024
        for bid in [bid for bid, at in self.first_registered.items() if at < horizon]:
            del self.first_registered[bid]
        while len(self.first_registered) > limit:
            del self.first_registered[next(iter(self.first_registered))]

    def _deregister(self, it: Intent, batch: _Batch) -> None:
        plan, known = batch.plan, batch.known
        if known is not None and it.id in known.builders and it.id not in batch.deregistered:
            error = self._flood(it, known, batch)
            if error is not None:
                plan.outcomes.append((it, outcome(it, batch.wall, REJECTED, error)))
                return
            plan.deregistered_listed.append(it.id)
        old = batch.target.pop(it.id, None)
        batch.deregistered.add(it.id)
        plan.deregistered[it.id] = round(batch.wall + self.rules.confirm_grace, 3)
        if it.id in plan.deregistration_ended:
            plan.deregistration_ended.remove(it.id)
        plan.outcomes.append((it, outcome(it, batch.wall, APPLIED, builder=old)))

    def _flood(self, it: Intent, known: Validated, batch: _Batch) -> RecordError | None:
        """A deregistration of a builder DNS lists, past the share of the fleet within the confirm grace: held."""
        fleet = known.builders
        recent = 1 + sum(1 for bid in batch.deregistered if bid in fleet)
        if not over_share(recent, len(fleet), self.rules.mass_deregistration_share, floor=1):
            self.flood_logged = False
            return None
        if not self.flood_logged:
            self.flood_logged = True
            log.error("mass deregistration held: intent %s (request %s) would make %d of the %d builders DNS lists "
                      "deregistered within %.0fs (more than --mass-deregistration-share %.2f); deregistrations of "
                      "builders DNS lists are rejected until earlier ones expire", it.entry_id, it.request, recent,
                      len(fleet), self.rules.confirm_grace, self.rules.mass_deregistration_share)
        return RecordError("mass_deregistration", f"{recent - 1} of the {len(fleet)} builders DNS lists were "
                           f"deregistered within {self.rules.confirm_grace:g}s: held "
                           f"(--mass-deregistration-share {self.rules.mass_deregistration_share:g})")

    def _guard(self, due: list[str], size: int, now: float) -> list[str]:
        if not due or not over_share(len(due), size, self.rules.mass_share):
            self.mass_since = None
            return due
        if self.mass_since is None:
            self.mass_since = now
            log.error("mass removal held: %d of %d builders missing from the source; "
                      "applying only if it lasts %.1fs", len(due), size, self.rules.mass_hold)
        if now - self.mass_since >= self.rules.mass_hold:
            log.error("mass removal applied: %d of %d builders missing for %.1fs",
                      len(due), size, now - self.mass_since)
            self.mass_since = None
            return due
        return []


def _diff(current: dict[str, Builder], target: dict[str, Builder], plan: Plan) -> None:
    for bid, b in target.items():
        old = current.get(bid)
        if old is b:
            continue
        if old is None or old != b:
            plan.upsert.append(b)
        elif b.source != old.source or b.registered_at != old.registered_at:
            plan.touch.append(b)
    plan.remove.extend(bid for bid in current if bid not in target)
