"""What each xdsctl subcommand reads (through Store, so a Redis outage is StoreUnavailable), and how
it is shown to people.

Tables go to a terminal as rich tables; piped, they are tab-separated lines (a header, then one
line per row) that are never cut short. JSON carries versions as numbers: an Envoy's ACKed
``version_info`` such as ``12-bridge`` (a transitional snapshot) is ``12`` in ``acked``, and the
label is in ``labels``.
"""
from __future__ import annotations

import sys
import time

import orjson
from rich.console import Console
from rich.table import Table

from shared import resources as rs
from shared.errors import StoreMisuse
from shared.replication import Link
from shared.status import READS_PRIMARY, READS_REPLICA, STALE_AFTER, DiscovererStatus, EnvoyStatus, ReplicaStatus, fresh
from shared.store import Change, Store

console = Console(markup=False, highlight=False, soft_wrap=True)


# --- reading ----------------------------------------------------------------------------------

async def collect(store: Store, command: str, args) -> dict:
    return await READERS[command](store, args)


async def _routes(store: Store, args) -> dict:
    snap = await store.load()
    return {"version": snap.version,
            "routes": {b.sni: b.endpoint for b in sorted(snap.builders.values(), key=lambda b: b.sni)}}


async def _builders(store: Store, args) -> dict:
    snap = await store.load()
    return {"version": snap.version, "builders": [
        {"id": b.id, "app": b.app, "region": b.region, "address": b.address, "port": b.port,
         "sni": b.sni, "seen_at": b.seen_at, "source": b.source, "registered_at": b.registered_at or None}
        for b in sorted(snap.builders.values(), key=lambda b: b.id)],
        "corrupt": list(snap.corrupt)}


async def _leader(store: Store, args) -> dict:
    holder, epoch, ttl = await store.leader()
    return {"holder": holder, "epoch": epoch, "ttl_ms": ttl}


async def _replicas(store: Store, args) -> dict:
    version = await store.version()
    return {"version": version, "replicas": _replica_lag(await _fresh(store, store.keys.replicas, ReplicaStatus), version)}


async def _envoys(store: Store, args) -> dict:
    version = await store.version()
    return {"version": version, "envoys": _with_lag(await _fresh(store, store.keys.envoys, EnvoyStatus), version)}


async def _discoverers(store: Store, args=None) -> dict:
    """Live discoverers (entries refreshed within STALE_AFTER), with ``age`` and ``last_poll_age``."""
    now = time.time()
    entries = {}
    for holder, d in (await _fresh(store, store.keys.discoverers, DiscovererStatus, now)).items():
        poll = d.last_poll_at
        entries[holder] = {**d.to_json(), "age": round(now - d.updated_at, 3),
                           "last_poll_age": round(now - poll, 3) if poll else None}
    return {"discoverers": entries}


async def _changes(store: Store, args) -> dict:
    return {"changes": [change_entry(c) for c in await store.recent_changes(args.count)]}


async def status(store: Store, args=None) -> dict:
    version = await store.version()
    holder, epoch, ttl = await store.leader()
    envoys = _with_lag(await _fresh(store, store.keys.envoys, EnvoyStatus), version)
    counts = {"in_sync": 0, "behind": 0, "nacking": 0, "refused": 0}
    for e in envoys.values():
        counts[e["state"]] += 1
    return {"version": version, "leader": {"holder": holder, "epoch": epoch, "ttl_ms": ttl},
            "discoverers": (await _discoverers(store))["discoverers"],
            "replicas": _replica_lag(await _fresh(store, store.keys.replicas, ReplicaStatus), version),
            "envoys": counts,
            "redis": await _link(store),
            "empty": version == 0 and holder is None}


async def _link(store: Store) -> dict | None:
    """Whether the Redis we read is a replica cut off from its primary: then all above is as of the cut."""
    try:
        link = Link.from_info(await store.replication())
    except StoreMisuse:  # an ACL user without +info: say nothing rather than fail the view
        return None
    return {"replica": link.replica, "link_up": link.up, "link_down_seconds": link.down_seconds,
            "master": link.master, "says": link.describe()}


READERS = {"routes": _routes, "builders": _builders, "leader": _leader, "replicas": _replicas,
           "envoys": _envoys, "discoverers": _discoverers, "changes": _changes, "status": status}


async def _fresh(store: Store, key: str, record: type, now: float | None = None) -> dict:
    """The live entries of the status hash at ``key``, as records sorted by key."""
    now = time.time() if now is None else now
    return fresh(await store.get_status(key), record, now)


def _replica_lag(replicas: dict[str, ReplicaStatus], version: int) -> dict[str, dict]:
    """``lag``: versions between what Redis (this --redis-url) holds and what the replica serves.
    A replica reading a Redis replica (--redis-read-url) also reports ``source_version``, the
    version that replica held at its last read: replication lag shows as a lower number there."""
    return {k: {**r.to_json(), "lag": max(version - r.version, 0)} for k, r in replicas.items()}


def _with_lag(envoys: dict[str, EnvoyStatus], version: int) -> dict[str, dict]:
    out = {}
    for node, record in envoys.items():
        e = out[node] = record.to_json()
        e["acked"] = {t: rs.version_number(v) for t, v in record.acked.items()}
        labels = {t: rs.version_label(v) for t, v in record.acked.items() if rs.version_label(v)}
        if labels:
            e["labels"] = labels
        e["lag"] = max((version - v for v in e["acked"].values()), default=version)
        nack = e["last_nack"] = dict(record.last_nack) if record.last_nack else None
        if nack:
            nack["version"] = rs.version_number(nack.get("version", "0"))
        if e.get("refused"):  # the replica will not serve its streams as configured (e.g. SotW on FCDS)
            e["state"] = "refused"
        elif nack and nack["version"] >= min(e["acked"].values(), default=0):
            e["state"] = "nacking"
        else:
            e["state"] = "in_sync" if e["lag"] == 0 else "behind"
    return out


def change_entry(c: Change) -> dict:
    """One change for JSON: the stream id, ``at`` (wall-clock seconds from the id) and the id lists."""
    return {"id": c.stream_id, "at": c.written_at, "version": c.version, "epoch": c.epoch,
            "added": list(c.added), "removed": list(c.removed), "updated": list(c.updated)}


# --- showing ----------------------------------------------------------------------------------

def show(command: str, data: dict) -> None:
    SHOW[command](data)


def _show_routes(data: dict) -> None:
    if not data["routes"]:
        console.print(f"no routes (version {data['version']}): is a discoverer running with this --prefix?")
        return
    _table(("SNI", "address"), data["routes"].items(), f"routes at version {data['version']}")


def _show_builders(data: dict) -> None:
    _table(("id", "app", "region", "address", "port", "sni", "source"),
           ((b["id"], b["app"], b["region"], b["address"], b["port"], b["sni"], _source(b)) for b in data["builders"]),
           f"{len(data['builders'])} builders at version {data['version']}")


def _source(b: dict) -> str:
    """dns; dns (registered 12 s ago); intent (unconfirmed for 3 s)."""
    if not b.get("registered_at"):
        return b.get("source", "dns")
    age = max(0.0, time.time() - b["registered_at"])
    if b.get("source") == "intent":
        return f"intent (unconfirmed for {age:.0f} s)"
    return f"dns (registered {age:.0f} s ago)"


def _show_leader(data: dict) -> None:
    console.print(f"leader: {data['holder'] or '(none)'}  epoch {data['epoch']}  lease {max(data['ttl_ms'], 0)} ms")


def _show_replicas(data: dict) -> None:
    _table(("replica", "host", "address", "streams", "version", "lag", "reads", "ready"),
           ((k, _host(v), v.get("address"), v.get("streams"), v.get("version"), v.get("lag"), _reads(v),
             v.get("ready")) for k, v in data["replicas"].items()),
           f"ADS replicas (Redis at version {data['version']})")


def _show_envoys(data: dict) -> None:
    _table(("node", "region", "replica", "acked", "lag", "state", "last NACK / refusal"),
           ((k, v.get("region"), v.get("replica"), _acked(v), v["lag"], v["state"], _nack(v))
            for k, v in data["envoys"].items()), f"Envoys (current version {data['version']})")


def _show_discoverers(data: dict) -> None:
    if not data["discoverers"]:
        console.print("no discoverer has reported in the last %.0f s" % STALE_AFTER)
        return
    _table(("holder", "role", "epoch", "version", "builders", "last poll", "last error", "age"),
           ((k, v.get("role"), v.get("epoch"), v.get("version"), v.get("builders"), _ago(v.get("last_poll_age")),
             v.get("last_error"), _ago(v.get("age"))) for k, v in data["discoverers"].items()),
           "discoverers")


def _show_changes(data: dict) -> None:
    for c in data["changes"]:
        console.print(change_line(c))


def _host(replica: dict) -> str:
    """The host; for a worker, also the supervisor whose port it shares (``xds-server --workers``)."""
    host = replica.get("host") or ""
    if replica.get("workers"):
        host += f" (worker {replica.get('worker')} of {replica['workers']})"
    return host


def show_status(data: dict) -> None:
    redis = data.get("redis")
    if redis and not redis["link_up"]:
        console.print(f"WARNING: this Redis is {redis['says']}: what follows is as of then "
                      "(this region is cut off from the primary)")
    if data["empty"]:
        console.print("this prefix holds nothing yet: no version and no leader (is a discoverer running?)")
    leader = data["leader"]
    console.print(f"version {data['version']}   leader {leader['holder'] or '(none)'} (epoch {leader['epoch']})")
    discoverers = data["discoverers"]
    console.print(f"discoverers {len(discoverers)}: " + ", ".join(
        f"{k} {v.get('role')}" + (f" (last error: {v['last_error']})" if v.get("last_error") else "")
        for k, v in discoverers.items()))
    replicas = data["replicas"]
    console.print(f"replicas {len(replicas)}: " + ", ".join(
        f"{k} " + (f"v{v.get('version')}" if v.get("ready", True) else "not loaded yet") + f" (lag {v.get('lag', 0)}"
        + (f", reads a replica at v{v.get('source_version')}" if v.get("reads") == READS_REPLICA else "")
        + f") {v.get('streams')} streams" for k, v in replicas.items()))
    e = data["envoys"]
    console.print(f"envoys: {e['in_sync']} in sync, {e['behind']} behind, {e['nacking']} NACKing"
                  + (f", {e['refused']} refused" if e.get("refused") else ""))


SHOW = {"routes": _show_routes, "builders": _show_builders, "leader": _show_leader, "replicas": _show_replicas,
        "envoys": _show_envoys, "discoverers": _show_discoverers, "changes": _show_changes, "status": show_status}


def change_line(c: dict) -> str:
    ids = ["+" + i for i in c["added"]] + ["-" + i for i in c["removed"]] + ["~" + i for i in c["updated"]]
    return (f"{clock(c['at'])}  v{c['version']}  epoch {c['epoch']}  +{len(c['added'])} -{len(c['removed'])} "
            f"~{len(c['updated'])}  {' '.join(ids)[:200]}")


def clock(at: float) -> str:
    """Local wall-clock time with milliseconds: '2026-11-27 14:03:07.123'."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def _ago(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.1f}s ago"


def _reads(v: dict) -> str:
    if v.get("reads") == READS_REPLICA:
        return f"replica v{v.get('source_version')}"
    return v.get("reads") or READS_PRIMARY


def _acked(v: dict) -> str:
    labels = v.get("labels") or {}
    return " ".join(f"{k}={ver}" + (f"-{labels[k]}" if k in labels else "")
                    for k, ver in sorted((v.get("acked") or {}).items()))


def _nack(v: dict) -> str:
    if v.get("refused"):
        return f"refused: {v['refused']['detail'][:120]}"
    n = v.get("last_nack")
    return f"{n['type']} v{n['version']}: {n['detail'][:60]}" if n else ""


def _table(columns, rows, title: str) -> None:
    """A rich table on a terminal; piped, tab-separated lines that keep every value whole."""
    cells = [[str(x) if x is not None else "" for x in row] for row in rows]
    if not sys.stdout.isatty():
        for line in (columns, *cells):
            sys.stdout.write("\t".join(line) + "\n")
        return
    table = Table(title=title)
    for c in columns:
        table.add_column(c, overflow="fold")
    for row in cells:
        table.add_row(*row)
    console.print(table)


async def follow_changes(store: Store, as_json: bool) -> None:
    """Print each new change as it is appended, until interrupted. Says on stderr where it starts:
    every entry after that stream id is printed, even one appended before the first XREAD."""
    newest = await store.recent_changes(1)
    last = newest[-1].stream_id if newest else "0-0"
    print(f"following {store.keys.changes} after {last} (Ctrl-C stops)", file=sys.stderr, flush=True)
    while True:
        for change in await store.read_changes(last, block_ms=1000, count=100):
            last = change.stream_id
            entry = change_entry(change)
            print(orjson.dumps(entry).decode() if as_json else change_line(entry), flush=True)
