"""``xdsctl register`` / ``xdsctl deregister``: write an intent, and with ``--wait`` see it served.

The intent is one XADD on ``{xds}:intents`` (what any provisioner may do with
its own Redis client). Its outcome appears at ``{xds}:outcome:<entry id>``
once the leader has applied or rejected it. ``--wait`` then reads
``{xds}:replicas`` and ``{xds}:envoys`` until every live Envoy that should
see the builder has ACKed a version that holds it (deregister: that no
longer holds it):

- which Envoys: all live ones behind a replica with ``--region-scope all``;
  behind a ``local`` replica, those whose region is the builder's;
- read from ``--redis-read-url`` when given (a replica in the provisioner's region: the
  outcome and the Envoys' ACKs reach it one one-way trip after the primary, and each poll
  costs no round trip across the WAN); only the XADD goes to the primary;
- ACKed: ``cds`` at or past the outcome's version (``filter_chains``: ``cds``
  and ``lds`` to register, ``lds`` to deregister, since the listener is what
  routes); ``on_demand``: the Envoy's replica holds that version (an Envoy
  asks for a builder's cluster when a connection for it arrives).

Exit status: 0 done, 3 timed out (the Envoys that had not ACKed are named),
4 rejected or superseded by a later intent (the reason is printed).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

import orjson

from shared import resources as rs
from shared.config import RedisSettings, ip_address, non_empty, port, redis_url, seconds
from shared.connect import redis_client
from shared.outcomes import APPLIED, REJECTED
from shared.status import EnvoyStatus, ReplicaStatus, read
from shared.store import Store

COMMANDS = ("register", "deregister")
EXIT_TIMEOUT, EXIT_REJECTED = 3, 4
CDS, LDS = rs.SHORT[rs.CLUSTER], rs.SHORT[rs.LISTENER]  # keys of an Envoy's "acked" in {xds}:envoys


def add_parsers(sub, parents) -> None:
    r = sub.add_parser("register", parents=parents,
                       help="register a builder at once (an intent on {xds}:intents); --wait until Envoys serve it")
    r.add_argument("--id", required=True, type=non_empty, help="builder (machine) id (required)")
    r.add_argument("--address", required=True, type=ip_address, help="its address (6PN IPv6 on Fly; required)")
    r.add_argument("--app", help="its app (default: the discoverer's --app, when it has exactly one)")
    r.add_argument("--region", help="its region (default: the discoverer's --region, when it has exactly one)")
    r.add_argument("--port", type=port, help="its port (default: the discoverer's --builder-port)")
    d = sub.add_parser("deregister", parents=parents,
                       help="remove a builder at once; DNS may not bring it back for the discoverer's --confirm-grace")
    d.add_argument("--id", required=True, type=non_empty, help="builder (machine) id (required)")
    for p in (r, d):
        p.add_argument("--wait", action="store_true",
                       help="return when every live Envoy that should see it has ACKed (exit 3 on timeout)")
        p.add_argument("--timeout", type=seconds, default=10.0, help="seconds --wait waits at most")
        p.add_argument("--redis-read-url", type=redis_url, default=None,
                       help="with --wait: read the outcome and the Envoys' ACKs from this Redis (a replica near "
                            "you); the intent still goes to --redis-url")


def intent_fields(args: argparse.Namespace) -> dict[str, str]:
    fields = {"op": args.command, "id": args.id}
    if args.command == "register":
        fields["address"] = args.address
        for name in ("app", "region", "port"):
            value = getattr(args, name)
            if value is not None:
                fields[name] = str(value)
    return fields


async def connected(settings: RedisSettings, args: argparse.Namespace) -> int:
    """``run`` on its own connections. To the primary neither CLIENT SETNAME nor HELLO (RESP2): on
    a short-lived connection each is one more round trip, 180 ms from a far region."""
    async with contextlib.AsyncExitStack() as stack:
        store = Store(await stack.enter_async_context(redis_client(settings.url, resp3=False)), settings.keys)
        reader = store
        if args.redis_read_url:
            reader = Store(await stack.enter_async_context(redis_client(args.redis_read_url)), settings.keys)
        return await run(store, args, reader)


async def run(store: Store, args: argparse.Namespace, reader: Store | None = None) -> int:
    """Append the intent on ``store`` (the primary); with --wait, watch its outcome and the ACKs on
    ``reader`` (default: the primary)."""
    reader = reader or store
    t0 = time.monotonic()
    entry = await store.append_intent(intent_fields(args))
    result = {"entry": entry, "op": args.command, "id": args.id, "status": "appended"}
    if not args.wait:
        return _done(args, result, 0)
    deadline = t0 + args.timeout
    outcome = await wait_for_outcome(reader, entry, deadline)
    if outcome is None:
        result.update(status="timeout", waiting=[], reason="no outcome recorded: is a discoverer leading?")
        return _done(args, result, EXIT_TIMEOUT)
    result.update(status=outcome["status"], version=outcome.get("version"), outcome=outcome)
    if outcome["status"] != APPLIED:
        return _done(args, result, EXIT_REJECTED)
    acked, waiting = await wait_for_envoys(reader, outcome, args.command == "register", deadline)
    result.update(wait_ms=round((time.monotonic() - t0) * 1000, 1), envoys=acked, waiting=waiting)
    if waiting:
        result["status"] = "timeout"
        return _done(args, result, EXIT_TIMEOUT)
    return _done(args, result, 0)


async def wait_for_outcome(store: Store, request: str, deadline: float) -> dict | None:
    while True:
        outcome = await store.outcome(request)
        if outcome is not None or time.monotonic() >= deadline:
            return outcome
        await asyncio.sleep(0.002)


async def wait_for_envoys(store: Store, outcome: dict, register: bool, deadline: float) -> tuple[list, list]:
    """(Envoys that hold what the outcome asked, those that do not yet) once none is left, or at the deadline."""
    started = time.monotonic()
    while True:
        replicas, envoys = await store.get_statuses(store.keys.replicas, store.keys.envoys)
        acked, waiting = fleet_state(read(replicas, ReplicaStatus), read(envoys, EnvoyStatus), outcome, register,
                                     time.time())
        if not waiting or time.monotonic() >= deadline:
            return acked, waiting
        await asyncio.sleep(0.005 if time.monotonic() - started < 1 else 0.025)


def fleet_state(replicas: dict[str, ReplicaStatus], envoys: dict[str, EnvoyStatus], outcome: dict, register: bool,
                now: float) -> tuple[list[str], list[dict]]:
    """Of the live Envoys that should see the builder: (node ids done, [{node, replica, acked}] not yet)."""
    done, waiting = [], []
    for node, envoy in sorted(envoys.items()):
        if envoy.stale(now):
            continue
        replica = replicas.get(envoy.replica)
        if replica is not None and replica.stale(now):
            replica = None
        verdict = serves(envoy, replica, outcome, register)
        if verdict is None:
            continue
        if verdict:
            done.append(node)
        else:
            waiting.append({"node": node, "replica": envoy.replica, "region": envoy.region, "acked": envoy.acked})
    return done, waiting


def serves(envoy: EnvoyStatus, replica: ReplicaStatus | None, outcome: dict, register: bool) -> bool | None:
    """Whether this Envoy is where the outcome wants it; None when it should not see the builder at all."""
    region = outcome.get("region")
    if region is None:
        return None  # deregistering an id that was not routed: no Envoy had it
    info = replica or ReplicaStatus()  # a replica we know nothing of: assume it shows every builder to every Envoy
    if info.region_scope == rs.SCOPE_LOCAL and (envoy.region or "") != region:
        return None
    version = int(outcome.get("version") or 0)
    if info.routing == rs.ON_DEMAND:
        return replica is not None and replica.version >= version
    types = (CDS,)
    if info.routing == rs.FILTER_CHAINS:
        types = (CDS, LDS) if register else (LDS,)
    return all(t in envoy.acked and rs.version_number(envoy.acked[t]) >= version for t in types)


def _done(args: argparse.Namespace, result: dict, code: int) -> int:
    """The result; with --json on stdout, and what went wrong on stderr in both forms."""
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    if not args.json or code:
        _print(result)
    return code


def _print(r: dict) -> None:
    what = f"{r['op']} {r['id']}"
    status = r["status"]
    if status == "appended":
        print(f"{what}: intent {r['entry']} appended")
    elif status == APPLIED:
        print(f"{what}: applied at version {r['version']}; {len(r['envoys'])} Envoys ACKed in {r['wait_ms']:.0f} ms")
    elif status == "timeout" and "outcome" not in r:
        print(f"{what}: intent {r['entry']}: {r['reason']}", file=sys.stderr)
    elif status == "timeout":
        names = ", ".join(f"{w['node']} (replica {w['replica']}, acked "
                          + (" ".join(f"{k}={v}" for k, v in sorted(w["acked"].items())) or "nothing") + ")"
                          for w in r["waiting"])
        print(f"{what}: applied at version {r['version']}, but after {r['wait_ms'] / 1000:.1f} s these Envoys "
              f"had not ACKed it: {names}", file=sys.stderr)
    else:
        o = r["outcome"]
        why = f"{o.get('reason')}: {o.get('detail')}" if status == REJECTED else "a later intent undid it"
        print(f"{what}: {status} ({why})", file=sys.stderr)
