"""The stages of ``xdsctl explain``, decided from what Redis holds (``Facts``): pure functions, no I/O."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from shared import resources as rs
from shared.model import Builder, SOURCE_INTENT
from shared.outcomes import APPLIED
from shared.status import EnvoyStatus, ReplicaStatus
from shared.store import Change

from .register import serves
from .views import clock

INTENTS_SEARCHED = 2000

# What to do about each rejection reason the leader records (discoverer.rejections).
FIXES = {
    "address_not_allowed": "its address is outside the discoverer's --allow-cidr networks: give the machine an "
                           "address in them (on Fly its 6PN fdaa:: address) or add its network with --allow-cidr",
    "other_app": "the discoverer routes only its --app apps: run the builder in one of them, or add its app (--app)",
    "not_wanted": "the discoverer routes only its --app apps and --region regions: register it with one of those",
    "other_region": "the discoverer routes only its --region regions: run the builder there, or add the region",
    "duplicate_id": "two records give this id different addresses: the source must list one",
    "duplicate_sni": "another builder renders the same SNI (see --sni-template): ids must differ",
    "dns_conflict": "DNS lists it with another app or region: register what DNS lists",
    "id_at_other_address": "DNS lists it at another address and DNS wins: register the address DNS lists",
    "address_of_other_id": "DNS lists that address under another id: register the machine's own id",
    "address_of_other_app": "DNS lists that address as a machine of an app that is not a builder app: never routed "
                            "(a wrong address, or a leaked provisioner credential: see docs/security.md)",
    "id_of_other_app": "DNS lists that id as a machine of an app that is not a builder app: never routed",
    "too_many_unconfirmed": "--max-unconfirmed registrations DNS does not list yet are routed: wait for DNS, or "
                            "raise the cap",
    "unconfirmed_too_long": "DNS did not list it within --confirm-grace of its first registration: DNS adds it "
                            "once it lists it",
    "mass_deregistration": "more than --mass-deregistration-share of the builders DNS lists were deregistered "
                           "within --confirm-grace: held; DNS removes a machine that really stops",
}
MALFORMED = "the record itself is malformed: fix what lists it (the machine's metadata, or the intent's fields)"


@dataclass
class Stage:
    n: int
    name: str
    ok: bool | None  # None: not reached (an earlier stage decides)
    says: str
    fix: str = ""
    data: dict = field(default_factory=dict)


@dataclass
class Facts:
    """Everything the stages are decided from, read once."""

    id: str
    sni: str | None
    builder: Builder | None
    rejection: dict | None
    deregistered_until: float
    intents: list[dict]  # newest first: {entry, op, outcome}
    changes: list[Change]  # oldest first
    version: int
    leader: str | None
    replicas: dict[str, ReplicaStatus]  # live ones
    envoys: dict[str, EnvoyStatus]  # live ones


def stages(f: Facts, now: float | None = None) -> list[Stage]:
    now = time.time() if now is None else now
    since = added_at(f)
    return [source(f, now), validation(f), redis_stage(f, since), replicas(f, since), envoys(f, since)]


def source(f: Facts, now: float) -> Stage:
    b, rej = f.builder, f.rejection
    if b is not None and b.source == SOURCE_INTENT:
        return Stage(1, "source", True, f"registered by an intent ({_entry(f)}), not listed by DNS yet "
                     f"(for {max(0.0, now - b.registered_at):.0f} s; removed if DNS never lists it)")
    if b is not None:
        return Stage(1, "source", True, f"DNS lists it: app {b.app}, region {b.region}, {b.endpoint}")
    if rej is not None:
        what = f"intent {rej.get('entry')} registers it" if rej.get("source") == "intent" else "DNS lists it"
        return Stage(1, "source", True, what)
    if f.deregistered_until > now:
        return Stage(1, "source", False, f"deregistered ({_entry(f, 'deregister')}): DNS may not bring it back "
                     f"until {clock(f.deregistered_until)}",
                     "register it again (xdsctl register --id ...) to route it before then")
    if any(i["op"] == "register" and (i["outcome"] or {}).get("status") == APPLIED for i in f.intents):
        return Stage(1, "source", False, f"registered ({_entry(f)}), since removed: DNS never listed it",
                     "a registration DNS does not list within --confirm-grace is removed: check the machine's "
                     "app, region and address in DNS (_instances.internal)")
    lead = "" if f.leader else "; and no discoverer leads (xdsctl leader): nothing polls DNS"
    return Stage(1, "source", False, f"no source lists it: DNS does not (as the leader sees it) and no intent "
                 f"of the last {INTENTS_SEARCHED} registered it{lead}",
                 "is the machine started, in one of the discoverer's --app apps? Or register it: xdsctl register")


def _entry(f: Facts, op: str = "register") -> str:
    for i in f.intents:
        if i["op"] == op:
            out = i["outcome"] or {}
            version = f" at version {out['version']}" if out.get("version") else ""
            return f"entry {i['entry']}, {out.get('status', 'outcome expired')}{version}"
    return "its entry has left the stream"


def validation(f: Facts) -> Stage:
    if f.builder is not None:
        return Stage(2, "validation", True, "accepted")
    rej = f.rejection
    if rej is None:
        return Stage(2, "validation", None, "not reached")
    return Stage(2, "validation", False,
                 f"rejected by the leader ({rej.get('source')}, since {clock(float(rej.get('at') or 0))}): "
                 f"{rej.get('reason')}: {rej.get('detail')}", FIXES.get(rej.get("reason"), MALFORMED), data=rej)


def added_at(f: Facts) -> Change | int | None:
    """The change entry that put the builder in the set as it is (else the version from which it is
    there at the latest: the stream was trimmed); None when it is not in the set."""
    if f.builder is None:
        return None
    for change in reversed(f.changes):
        if f.id in change.added or f.id in change.updated:
            return change
    return f.changes[0].version - 1 if f.changes else f.version


def _since_version(since: Change | int) -> int:
    return since.version if isinstance(since, Change) else since


def redis_stage(f: Facts, since: Change | int | None) -> Stage:
    if since is None:
        return Stage(3, "redis", None, "not reached")
    if isinstance(since, Change):
        return Stage(3, "redis", True, f"in the set since version {since.version} ({clock(since.written_at)}, "
                     f"change {since.stream_id}); Redis is at version {f.version}",
                     data={"since": since.version, "change": since.stream_id, "at": since.written_at})
    return Stage(3, "redis", True, f"in the set since before the oldest change kept (version {since}); "
                 f"Redis is at version {f.version}", data={"since": since})


def replicas(f: Facts, since: Change | int | None) -> Stage:
    if since is None:
        return Stage(4, "replicas", None, "not reached")
    v = _since_version(since)
    serving, lagging = {}, {}
    for rid, r in f.replicas.items():
        group = serving if r.version >= v and r.ready else lagging
        group.setdefault(r.region or "no region", []).append(f"{rid} (v{r.version})")
    says = f"serving version >= {v}: {_regions(serving)}" + (f"; behind: {_regions(lagging)}" if lagging else "")
    if serving:
        return Stage(4, "replicas", True, says, data={"serving": serving, "behind": lagging})
    if not f.replicas:
        return Stage(4, "replicas", False, "no live ADS replica reports (xdsctl replicas)",
                     "start xds-server replicas on this Redis (and --prefix)")
    return Stage(4, "replicas", False, says, "the replicas lag: xdsctl replicas; one that reads a Redis replica "
                 "(--redis-read-url) waits for replication", data={"serving": serving, "behind": lagging})


def envoys(f: Facts, since: Change | int | None) -> Stage:
    if since is None:
        return Stage(5, "envoys", None, "not reached")
    v = _since_version(since)
    groups = {"acked": {}, "nacked": {}, "behind": {}}
    for node, e in f.envoys.items():
        verdict = serves(e, f.replicas.get(e.replica), {"region": f.builder.region, "version": v}, True)
        if verdict is None:
            continue
        state, text = _envoy_state(e, verdict, v)
        groups[state].setdefault(e.region or "no region", []).append(f"{node}{text}")
    says = "; ".join(f"{k} {_regions(g)}" for k, g in groups.items() if g)
    if groups["nacked"]:
        return Stage(5, "envoys", False, says, "an Envoy refused the update that holds it: read the error "
                     "(xdsctl envoys) and the xds-server log; it keeps its older routes meanwhile", data=groups)
    if groups["behind"]:
        return Stage(5, "envoys", False, says, "those Envoys have not ACKed it yet: is their replica serving it "
                     "(stage 4)? xdsctl envoys shows what each ACKed", data=groups)
    if not groups["acked"]:
        return Stage(5, "envoys", False, f"no live Envoy should route it ({len(f.envoys)} live; region "
                     f"{f.builder.region})", "an Envoy sees builders of every region behind a replica with "
                     "--region-scope all, else only of its own --region: connect one", data=groups)
    return Stage(5, "envoys", True, says, data=groups)


def _envoy_state(e: EnvoyStatus, verdict: bool, v: int) -> tuple[str, str]:
    if verdict:
        return "acked", ""
    if e.refused:
        return "nacked", f" (refused by its replica: {str(e.refused.get('detail', ''))[:120]})"
    nack = e.last_nack
    if nack and rs.version_number(nack.get("version", 0)) >= v:
        return "nacked", f" ({nack.get('type')} v{rs.version_number(nack.get('version', 0))}: " \
                         f"{str(nack.get('detail', ''))[:160]})"
    acked = " ".join(f"{t}={rs.version_number(x)}" for t, x in sorted(e.acked.items()))
    return "behind", f" (acked {acked or 'nothing'})"


def _regions(groups: dict[str, list[str]]) -> str:
    return " ".join(f"[{region}: {', '.join(names)}]" for region, names in sorted(groups.items()))
