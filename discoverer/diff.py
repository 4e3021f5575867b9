"""Turn a source answer and registration intents into the next write: pure functions, no I/O.

Additions and updates apply at once. A removal waits ``grace`` seconds of
continuous absence so one missing answer does not flap a route. A plan that
would remove more than ``mass_share`` of the set is held until the same
condition has lasted ``mass_hold`` seconds.

Intents (``discoverer.intents``) and DNS, reconciled:
- a registered builder is routed at once, as ``source`` "intent"; when DNS
  lists it, DNS owns it (``source`` "dns", removed by the absence rules above);
  one DNS has not listed ``confirm_grace`` seconds after its registration is
  removed (its provisioner may have died after registering);
- a deregistered builder goes at once, and DNS answers that still list it are
  ignored for ``confirm_grace`` seconds (DNS lags);
- where DNS and an intent disagree on a builder's address, DNS wins (a
  conflict, reported in ``Plan.conflicts``).
Clocks: grace and mass-removal times are monotonic (in memory); registration
and deregistration times are wall clock, because they are stored in Redis and
a new leader must honour them.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace

from shared.errors import RecordError
from shared.model import SOURCE_DNS, Builder, Network, make_builder

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Rules:
    sni_template: str
    port: int
    allowed: tuple[Network, ...]
    grace: float = 0.5
    mass_share: float = 0.5
    mass_hold: float = 5.0
    apps: frozenset[str] = frozenset()  # only builders of these apps (with app_patterns; both empty: every app)
    app_patterns: tuple[re.Pattern, ...] = ()  # regexes an app name must match in full
    regions: frozenset[str] = frozenset()  # only builders in these regions (empty: every region)
    confirm_grace: float = 30.0  # seconds a registration may go unlisted by DNS; a deregistration's hold

    def wants_app(self, app: str) -> bool:
        if not (self.apps or self.app_patterns):
            return True
        return app in self.apps or any(p.fullmatch(app) for p in self.app_patterns)

    def wants(self, b: Builder) -> bool:
        return self.wants_app(b.app) and (not self.regions or b.region in self.regions)


@dataclass(slots=True)
class Validated:
    builders: dict[str, Builder] = field(default_factory=dict)
    rejected: list[RecordError] = field(default_factory=list)
    uncertain: set[str] = field(default_factory=set)  # ids we cannot decide on; keep as they are
    ignored: int = 0  # valid records of other apps
    others: list[RecordError] = field(default_factory=list)  # those records, why (for discoverer.rejections)


_MISSING = object()


def _make(raw: dict, rules: Rules, now: float, cache: dict | None) -> Builder | RecordError:
    """make_builder, remembered by the raw fields when a cache is given."""
    key = None
    if cache is not None:
        get = raw.get
        key = (get("id", _MISSING), get("app", _MISSING), get("region", _MISSING), get("ip", _MISSING),
               get("port", _MISSING))
        try:
            hit = cache.get(key)
        except TypeError:  # an unhashable value (a list in a JSON file): not cached
            key, hit = None, None
        if hit is not None:
            return hit
    try:
        result: Builder | RecordError = make_builder(
            raw, sni_template=rules.sni_template, port=rules.port, allowed=rules.allowed, now=now)
    except RecordError as err:
        result = err
    if key is not None:
        cache[key] = result
    return result


def validate(records: list[dict], rules: Rules, now: float, cache: dict | None = None) -> Validated:
    """Validate raw records; conflicting duplicates (same id or same SNI) are rejected.

    With ``cache`` (a dict the caller keeps and bounds, for one ``rules``), a
    record whose fields are unchanged since an earlier call is not validated
    again; its ``seen_at`` is then when it was first validated.
    """
    out = Validated()
    by_id: dict[str, Builder] = {}
    conflicted: set[str] = set()
    for raw in records:
        b = _make(raw, rules, now, cache)
        if isinstance(b, RecordError):
            out.rejected.append(b)
            continue
        if not rules.wants(b):
            out.ignored += 1  # _instances.internal lists every machine of the org, not only builders
            out.others.append(_unwanted(b, rules))
            continue
        prev = by_id.get(b.id)
        if prev is not None and prev != b:
            conflicted.add(b.id)
            out.rejected.append(RecordError("duplicate_id", f"{b.id}: {prev.endpoint} vs {b.endpoint}", subject=b.id))
        by_id.setdefault(b.id, b)
    for bid in conflicted:
        del by_id[bid]
        out.uncertain.add(bid)
    by_sni: dict[str, str] = {}
    for bid in sorted(by_id):
        b = by_id[bid]
        owner = by_sni.setdefault(b.sni, bid)
        if owner != bid:
            out.rejected.append(RecordError("duplicate_sni", f"{b.sni}: {owner} and {bid}", subject=bid))
            continue
        out.builders[bid] = b
    return out


def _unwanted(b: Builder, rules: Rules) -> RecordError:
    if not rules.wants_app(b.app):
        wanted = sorted(rules.apps) + [p.pattern for p in rules.app_patterns]
        return RecordError("other_app", f"app {b.app!r}; this discoverer routes {', '.join(wanted)}", subject=b.id)
    return RecordError("other_region", f"region {b.region!r}; this discoverer routes {', '.join(sorted(rules.regions))}",
                       subject=b.id)


REGISTER, DEREGISTER = "register", "deregister"  # Intent.op


@dataclass(frozen=True, slots=True)
class Intent:
    """One entry of the intents stream, checked (``discoverer.intents.parse_intent``).
    ``error`` set: rejected, with why."""

    entry_id: str
    request: str  # where its outcome goes: the caller's ``request``, else the entry id
    op: str = ""
    id: str = ""
    builder: Builder | None = None  # register: the validated record (source "intent")
    error: RecordError | None = None


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
    suppress: dict[str, float] = field(default_factory=dict)  # deregistered id -> wall clock until
    unsuppress: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.upsert or self.remove or self.touch or self.cursor or self.unsuppress)


@dataclass(slots=True)
class Planner:
    """Remembers since when each id has been missing and since when a mass removal lasts."""

    rules: Rules
    missing_since: dict[str, float] = field(default_factory=dict)
    mass_since: float | None = None

    def plan(self, current: dict[str, Builder], seen: Validated | None, now: float, *, wall: float | None = None,
             intents: list[Intent] = (), deregistered: dict[str, float] | None = None,
             reconcile: bool = True) -> Plan:
        """The next write. ``seen`` None: the source failed (no DNS-based change, no expiry).
        ``now`` is monotonic; ``wall`` (default ``now``) the wall clock of registrations.
        ``reconcile`` False (intents between polls): ``seen`` was planned at its poll already,
        so only the intents are, checked against it."""
        wall = now if wall is None else wall
        deregistered = deregistered or {}
        suppressed = {bid for bid, until in deregistered.items() if until > wall}
        plan = Plan(unsuppress=[bid for bid in deregistered if bid not in suppressed])
        target = dict(current)
        if seen is not None and reconcile:
            self._from_source(current, seen, suppressed, now, wall, target, plan)
        for it in intents:
            plan.cursor = it.entry_id
            if it.error is not None:
                plan.outcomes.append((it, _outcome(it, wall, "rejected", it.error)))
            elif it.op == REGISTER:
                self._register(it, seen, suppressed, wall, target, plan)
            else:
                self._deregister(it, suppressed, wall, target, plan)
        _superseded(plan, target)
        _diff(current, target, plan)
        return plan

    def _from_source(self, current: dict[str, Builder], seen: Validated, suppressed: set[str], now: float,
                     wall: float, target: dict[str, Builder], plan: Plan) -> None:
        listed = seen.builders
        for bid, b in listed.items():
            if bid in suppressed:
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
        for bid in list(self.missing_since):
            if bid in listed or bid not in current or current[bid].unconfirmed:
                del self.missing_since[bid]
        due = []
        for bid, old in current.items():
            if (bid in listed and bid not in suppressed) or bid in seen.uncertain:
                continue
            if old.unconfirmed:
                if wall - old.registered_at >= self.rules.confirm_grace:
                    plan.expired.append(bid)
                continue
            since = self.missing_since.setdefault(bid, now)
            if now - since >= self.rules.grace:
                due.append(bid)
        removals = self._guard(due, len(current), now)
        plan.held = len(due) - len(removals)
        for bid in (*removals, *plan.expired):
            target.pop(bid, None)

    def _register(self, it: Intent, seen: Validated | None, suppressed: set[str], wall: float,
                  target: dict[str, Builder], plan: Plan) -> None:
        b = it.builder
        listed = seen.builders.get(b.id) if seen is not None else None
        if listed is not None and listed != b:
            plan.conflicts.append(f"intent {it.entry_id} registers {b.id} at {b.endpoint}, DNS lists it at "
                                  f"{listed.endpoint}: DNS wins")
            plan.outcomes.append((it, _outcome(it, wall, "rejected", RecordError(
                "dns_conflict", f"DNS lists {b.id} at {listed.endpoint}"))))
            return
        owner = next((o.id for o in target.values() if o.sni == b.sni and o.id != b.id), None)
        if owner is not None:
            plan.outcomes.append((it, _outcome(it, wall, "rejected", RecordError(
                "duplicate_sni", f"{b.sni} is {owner}'s"))))
            return
        if b.id in suppressed:
            suppressed.discard(b.id)
            plan.suppress.pop(b.id, None)
            plan.unsuppress.append(b.id)
        old = target.get(b.id)
        if listed is not None:  # DNS lists it just so: DNS owns it
            if old is None or old != listed:
                target[b.id] = listed
            elif old.unconfirmed:
                target[b.id] = replace(old, source=SOURCE_DNS)
        elif old is None or old != b or old.unconfirmed:  # a fresh registration, or a refreshed one
            target[b.id] = replace(b, seen_at=old.seen_at) if old is not None and old == b else b
        plan.outcomes.append((it, _outcome(it, wall, "applied", builder=target[b.id])))

    def _deregister(self, it: Intent, suppressed: set[str], wall: float, target: dict[str, Builder],
                    plan: Plan) -> None:
        old = target.pop(it.id, None)
        suppressed.add(it.id)
        plan.suppress[it.id] = round(wall + self.rules.confirm_grace, 3)
        if it.id in plan.unsuppress:
            plan.unsuppress.remove(it.id)
        plan.outcomes.append((it, _outcome(it, wall, "applied", builder=old)))

    def _guard(self, due: list[str], size: int, now: float) -> list[str]:
        if not due or len(due) <= self.rules.mass_share * size:
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


def _outcome(it: Intent, wall: float, status: str, error: RecordError | None = None,
             builder: Builder | None = None) -> dict:
    """What the caller of an intent reads back (``{xds}:outcome:<request>``); the write script adds
    ``version`` to every outcome that is not rejected."""
    out = {"request": it.request, "entry": it.entry_id, "op": it.op, "id": it.id, "status": status,
           "at": round(wall, 3)}
    if error is not None:
        out["reason"], out["detail"] = error.reason, error.detail
    if builder is not None:
        out.update(region=builder.region, address=builder.address, port=builder.port, sni=builder.sni)
    return out


def _superseded(plan: Plan, target: dict[str, Builder]) -> None:
    """A later intent of the same batch undid an earlier one: the write does not hold what it asked."""
    for it, out in plan.outcomes:
        if out["status"] != "applied":
            continue
        final = target.get(it.id)
        if (final is None or final != it.builder) if it.op == REGISTER else final is not None:
            out["status"] = "superseded"


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
