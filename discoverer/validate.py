"""Raw source records -> validated builders, and what DNS lists that is not a builder: pure, no I/O."""
from __future__ import annotations

from dataclasses import dataclass, field

from shared.errors import RecordError
from shared.model import Builder, make_builder

from .rules import Rules


@dataclass(slots=True)
class Validated:
    builders: dict[str, Builder] = field(default_factory=dict)
    rejected: list[RecordError] = field(default_factory=list)
    uncertain: set[str] = field(default_factory=set)  # ids we cannot decide on; keep as they are
    ignored: int = 0  # valid records of other apps or regions
    others: list[RecordError] = field(default_factory=list)  # those records, why (for discoverer.rejections)
    # every valid record of the answer, builder or not, by id and by address (the first one listed):
    # what an intent is checked against (``discoverer.plan``). Only what the source asked for: in
    # per-app mode, the builder apps' machines.
    ids: dict[str, Builder] = field(default_factory=dict)
    addresses: dict[str, Builder] = field(default_factory=dict)
    other_apps: dict[str, str] = field(default_factory=dict)  # address -> app the records do not list (per-app)


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
        out.ids.setdefault(b.id, b)
        out.addresses.setdefault(b.address, b)
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
    _unique_snis(by_id, out)
    return out


def _unique_snis(by_id: dict[str, Builder], out: Validated) -> None:
    by_sni: dict[str, str] = {}
    for bid in sorted(by_id):
        b = by_id[bid]
        owner = by_sni.setdefault(b.sni, bid)
        if owner != bid:
            out.rejected.append(RecordError("duplicate_sni", f"{b.sni}: {owner} and {bid}", subject=bid))
            continue
        out.builders[bid] = b


def _unwanted(b: Builder, rules: Rules) -> RecordError:
    if not rules.wants_app(b.app):
        wanted = sorted(rules.apps) + [p.pattern for p in rules.app_patterns]
        return RecordError("other_app", f"app {b.app!r}; this discoverer routes {', '.join(wanted)}", subject=b.id)
    return RecordError("other_region", f"region {b.region!r}; this discoverer routes {', '.join(sorted(rules.regions))}",
                       subject=b.id)
