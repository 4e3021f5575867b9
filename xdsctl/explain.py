"""``xdsctl explain ID|SNI [--probe HOST:PORT]``: why a builder routes, or the first stage where it does not.

One trace from Redis alone (read-only: a replica's URL will do), a numbered
line per stage, each failing one with what to do:

1. source: DNS lists it (as the leader sees it: in the set from DNS, or in
   ``{xds}:rejections`` from DNS), an intent registered it (its outcome), or
   a deregistration holds it off (``{xds}:deregistered``);
2. validation: accepted, or the leader's recorded rejection and its reason;
3. Redis: in ``{xds}:builders`` since version V (the change entry that put it there);
4. replicas: the live ones serving a version >= V, per region;
5. Envoys: those that should route it (the replicas' ``--region-scope``) and
   ACKed a version holding it, NACKed it (the error), or are behind;
6. with ``--probe``: a ClientHello for its SNI through an Envoy (``xdsctl.probe``).

Exit status: 0 when it routes, else the number of the first stage that fails.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict

import orjson

from shared.config import checker, hostport, parse_hostport, seconds
from shared.errors import CorruptState, RecordError
from shared.status import EnvoyStatus, ReplicaStatus, fresh
from shared.model import ID_RE, MAX_SNI, Builder, validate_sni
from shared.store import Store

from . import probe
from .trace import Facts, Stage, stages

COMMAND = "explain"
SCAN = 2000  # newest entries of the changes and intents streams searched for the builder


@checker(None, "ID|SNI")
def target(value: str) -> str:
    """A builder id or an SNI; anything else (control characters, odd bytes, huge) is one line, exit 2."""
    if len(value) > MAX_SNI or not value.isascii() or not value.isprintable():
        raise ValueError(f"wants a builder id or SNI: at most {MAX_SNI} printable ASCII characters "
                         f"(got {len(value)} characters: {ascii(value[:40])}{'...' if len(value) > 40 else ''})")
    if "." in value:
        try:
            return validate_sni(value)
        except RecordError:
            raise ValueError(f"wants a builder id or SNI (got {ascii(value[:80])}: not a DNS name)") from None
    if not ID_RE.match(value):
        raise ValueError(f"wants a builder id or SNI (got {ascii(value[:80])}: an id is letters, digits, _ and -)")
    return value


def add_parser(sub, parents) -> None:
    e = sub.add_parser(COMMAND, parents=parents, help="why a builder routes or not: one line per stage, what to do",
                       description=__doc__.split("\n\n")[0])
    e.add_argument("target", type=target, metavar="ID|SNI", help="a builder id, or the SNI a client sends")
    e.add_argument("--probe", type=hostport(), metavar="HOST:PORT",
                   help="also send a TLS ClientHello with its SNI through the Envoy listening there")
    e.add_argument("--timeout", type=seconds, default=2.0, help="seconds the probe waits")


async def gather(store: Store, name: str) -> Facts:
    keys = store.keys
    bid, sni = await _identify(store, name)
    raw = await store.field(keys.builders, bid)
    builder = None
    if raw is not None:
        try:
            builder = Builder.from_json(raw)
        except RecordError as exc:
            raise CorruptState(f"the record of {bid} in {keys.builders} is unreadable") from exc
    rejection = _json(await store.field(keys.rejections, bid))
    until = await store.field(keys.deregistered, bid)
    replicas, envoys = await store.get_statuses(keys.replicas, keys.envoys)
    now = time.time()
    return Facts(id=bid, sni=builder.sni if builder else sni, builder=builder, rejection=rejection,
                 deregistered_until=_number(until), intents=await _intents(store, bid),
                 changes=await store.recent_changes(SCAN), version=await store.version(),
                 leader=(await store.leader())[0],
                 replicas=fresh(replicas, ReplicaStatus, now), envoys=fresh(envoys, EnvoyStatus, now))


async def _identify(store: Store, name: str) -> tuple[str, str | None]:
    """(builder id, SNI): an SNI is looked up in the routes; one not routed is taken to name its id first."""
    if "." not in name:
        return name, None
    route = await store.field(store.keys.routes, name)
    if route is not None:
        return route.decode(errors="replace").rpartition(" ")[2], name
    return name.partition(".")[0], name


async def _intents(store: Store, bid: str) -> list[dict]:
    out = []
    for entry in await store.recent_intents(SCAN):
        fields = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in entry.fields.items()}
        if fields.get("id") == bid:
            outcome = await store.outcome(fields.get("request") or entry.entry_id)
            out.append({"entry": entry.entry_id, "op": fields.get("op"), "outcome": outcome})
    return out


def _json(raw: bytes | None) -> dict | None:
    try:
        return orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        return None


def _number(raw: bytes | None) -> float:
    try:
        return float(raw) if raw is not None else 0.0
    except ValueError:
        return 0.0


def probe_stage(args: argparse.Namespace, facts: Facts) -> Stage:
    where = args.probe
    if not facts.sni:
        return Stage(6, "probe", False, f"no SNI known for {facts.id}: give its SNI instead of its id",
                     "xdsctl explain SNI --probe HOST:PORT")
    host, port = parse_hostport(where)
    got = probe.hello(host, port, facts.sni, timeout=args.timeout)
    if got:
        return Stage(6, "probe", True, f"routed through {where}: the builder answered ({got})")
    fix = {probe.REFUSED: f"Envoy at {where} has no route for {facts.sni} (does it serve the builder listener, "
                          "and did it ACK? stage 5), or the builder refused the connection",
           probe.TIMED_OUT: f"nothing answered within {args.timeout:g} s: a slow or overloaded Envoy, an "
                            "on_demand Envoy still waiting for the cluster, or a builder that does not answer",
           probe.DOWN: f"nothing listens at {where}: is that an Envoy's builder listener?",
           probe.WRONG: f"something at {where} answered, but not with TLS"}[got]
    return Stage(6, "probe", False, f"{got.value} at {where} for SNI {facts.sni}", fix)


async def run(store: Store, args: argparse.Namespace) -> int:
    facts = await gather(store, args.target)
    trace = stages(facts)
    if args.probe:
        trace.append(probe_stage(args, facts))
    code = next((s.n for s in trace if s.ok is False), 0)
    if args.json:
        sys.stdout.write(orjson.dumps({"id": facts.id, "sni": facts.sni, "version": facts.version,
                                       "routes": code == 0, "exit": code, "stages": [asdict(s) for s in trace]},
                                      option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        show(facts, trace, code)
    return code


MARK = {True: "ok", False: "FAIL", None: "-"}


def one_line(text: str) -> str:
    """Text from Redis (an Envoy's NACK, a record's detail) on one line, control characters escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in " ".join(text.split()))


def show(facts: Facts, trace: list[Stage], code: int) -> None:
    print(f"{facts.id}" + (f" (SNI {facts.sni})" if facts.sni else "") + f", Redis at version {facts.version}")
    for s in trace:
        print(f"{s.n} {s.name:<10} {MARK[s.ok]:<4} {one_line(s.says)}")
        if s.ok is False and s.fix:
            print(f"{'':17}-> {one_line(s.fix)}")
    print("routes" if code == 0 else f"does not route: stage {code} ({trace[code - 1].name})")
