"""Turn a source answer into the next write: pure functions, no I/O.

Additions and updates apply at once. A removal waits ``grace`` seconds of
continuous absence so one missing answer does not flap a route. A plan that
would remove more than ``mass_share`` of the set is held until the same
condition has lasted ``mass_hold`` seconds.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace

from shared.errors import RecordError
from shared.model import Builder, Network, make_builder

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
            continue
        prev = by_id.get(b.id)
        if prev is not None and prev != b:
            conflicted.add(b.id)
            out.rejected.append(RecordError("duplicate_id", f"{b.id}: {prev.endpoint} vs {b.endpoint}"))
        by_id.setdefault(b.id, b)
    for bid in conflicted:
        del by_id[bid]
        out.uncertain.add(bid)
    by_sni: dict[str, str] = {}
    for bid in sorted(by_id):
        b = by_id[bid]
        owner = by_sni.setdefault(b.sni, bid)
        if owner != bid:
            out.rejected.append(RecordError("duplicate_sni", f"{b.sni}: {owner} and {bid}"))
            continue
        out.builders[bid] = b
    return out


@dataclass(slots=True)
class Plan:
    upsert: list[Builder] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    held: int = 0  # removals held back by the mass-removal guard

    def __bool__(self) -> bool:
        return bool(self.upsert or self.remove)


@dataclass(slots=True)
class Planner:
    """Remembers since when each id has been missing and since when a mass removal lasts."""

    rules: Rules
    missing_since: dict[str, float] = field(default_factory=dict)
    mass_since: float | None = None

    def plan(self, current: dict[str, Builder], seen: Validated, now: float) -> Plan:
        plan = Plan()
        for bid, b in seen.builders.items():
            old = current.get(bid)
            if old is None or (old is not b and old != b):
                plan.upsert.append(b if old is None else _keep_seen_at(b, old))
        for bid in list(self.missing_since):
            if bid in seen.builders or bid not in current:
                del self.missing_since[bid]
        due = []
        for bid in current:
            if bid in seen.builders or bid in seen.uncertain:
                continue
            since = self.missing_since.setdefault(bid, now)
            if now - since >= self.rules.grace:
                due.append(bid)
        plan.remove = self._guard(due, len(current), now)
        plan.held = len(due) - len(plan.remove)
        return plan

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


def _keep_seen_at(new: Builder, old: Builder) -> Builder:
    return replace(new, seen_at=old.seen_at)
