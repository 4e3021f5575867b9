"""What each xdsctl subcommand reads, and how it is shown to people."""
from __future__ import annotations

import time

import orjson
from rich.console import Console
from rich.table import Table

from shared import resources as rs
from shared.store import Store

STALE_AFTER = 15.0
console = Console()


async def collect(store: Store, command: str, args) -> dict | list:
    if command == "routes":
        snap = await store.load()
        return {"version": snap.version,
                "routes": {b.sni: b.endpoint for b in sorted(snap.builders.values(), key=lambda b: b.sni)}}
    if command == "builders":
        snap = await store.load()
        return {"version": snap.version, "builders": [
            {"id": b.id, "app": b.app, "region": b.region, "address": b.address, "port": b.port,
             "sni": b.sni, "seen_at": b.seen_at} for b in sorted(snap.builders.values(), key=lambda b: b.id)],
            "corrupt": list(snap.corrupt)}
    if command == "leader":
        holder, epoch, ttl = await store.leader()
        return {"holder": holder, "epoch": epoch, "ttl_ms": ttl}
    if command == "replicas":
        version = await store.version()
        return {"version": version, "replicas": _replica_lag(_fresh(await store.get_status(store.keys.replicas)),
                                                             version)}
    if command == "envoys":
        version = await store.version()
        return {"version": version, "envoys": _with_lag(_fresh(await store.get_status(store.keys.envoys)), version)}
    if command == "changes":
        raw = await store.client.xrevrange(store.keys.changes, count=args.count)
        return {"changes": [_change(sid, fields) for sid, fields in reversed(raw)]}
    if command == "status":
        return await status(store)
    raise ValueError(command)


async def status(store: Store) -> dict:
    version = await store.version()
    holder, epoch, ttl = await store.leader()
    envoys = _with_lag(_fresh(await store.get_status(store.keys.envoys)), version)
    counts = {"in_sync": 0, "behind": 0, "nacking": 0, "refused": 0}
    for e in envoys.values():
        counts[e["state"]] += 1
    return {"version": version, "leader": {"holder": holder, "epoch": epoch, "ttl_ms": ttl},
            "replicas": _replica_lag(_fresh(await store.get_status(store.keys.replicas)), version),
            "envoys": counts,
            "empty": version == 0 and holder is None}


def _fresh(entries: dict[str, dict]) -> dict[str, dict]:
    now = time.time()
    return {k: v for k, v in sorted(entries.items()) if now - float(v.get("heartbeat", 0)) <= STALE_AFTER}


def _replica_lag(replicas: dict[str, dict], version: int) -> dict[str, dict]:
    """``lag``: versions between what Redis (this --redis-url) holds and what the replica serves.
    A replica reading a Redis replica (--redis-read-url) also reports ``source_version``, the
    version that replica held at its last read: replication lag shows as a lower number there."""
    for r in replicas.values():
        r["lag"] = max(version - rs.version_number(r.get("version", 0)), 0)
    return replicas


def _with_lag(envoys: dict[str, dict], version: int) -> dict[str, dict]:
    for e in envoys.values():
        acked = e.get("acked") or {}
        e["lag"] = max((version - rs.version_number(v) for v in acked.values()), default=version)
        nack = e.get("last_nack")
        if e.get("refused"):  # the replica will not serve its streams as configured (e.g. SotW on FCDS)
            e["state"] = "refused"
        elif nack and rs.version_number(nack.get("version", "0")) >= min((rs.version_number(v) for v in acked.values()), default=0):
            e["state"] = "nacking"
        else:
            e["state"] = "in_sync" if e["lag"] == 0 else "behind"
    return envoys


def _change(sid: bytes, fields: dict) -> dict:
    out = {"id": sid.decode()}
    for k, v in fields.items():
        key = k.decode()
        if key == "records":
            continue
        out[key] = orjson.loads(v) if key in ("added", "removed", "updated") else int(v)
    return out


async def follow_changes(store: Store, args) -> int:
    last = "$"
    while True:
        reply = await store.client.xread({store.keys.changes: last}, block=1000, count=100)
        for _, entries in reply or ():
            for sid, fields in entries:
                last = sid
                change = _change(sid, fields)
                line = orjson.dumps(change).decode() if args.json else _change_line(change)
                print(line, flush=True)


def _change_line(c: dict) -> str:
    return (f"{c['id']}  v{c['version']}  epoch {c['epoch']}  +{len(c['added'])} -{len(c['removed'])} "
            f"~{len(c['updated'])}  {' '.join(['+' + i for i in c['added']] + ['-' + i for i in c['removed']] + ['~' + i for i in c['updated']])[:200]}")


def show(command: str, data: dict) -> None:
    if command == "routes":
        if not data["routes"]:
            console.print(f"no routes (version {data['version']}): is a discoverer running with this --prefix?")
            return
        _table(("SNI", "address"), data["routes"].items(), f"routes at version {data['version']}")
    elif command == "builders":
        _table(("id", "app", "region", "address", "port", "sni"),
               ((b["id"], b["app"], b["region"], b["address"], b["port"], b["sni"]) for b in data["builders"]),
               f"{len(data['builders'])} builders at version {data['version']}")
    elif command == "leader":
        console.print(f"leader: {data['holder'] or '(none)'}  epoch {data['epoch']}  lease {max(data['ttl_ms'], 0)} ms")
    elif command == "replicas":
        _table(("replica", "address", "streams", "version", "lag", "reads", "ready"),
               ((k, v.get("address"), v.get("streams"), v.get("version"), v.get("lag"), _reads(v), v.get("ready"))
                for k, v in data["replicas"].items()), f"ADS replicas (Redis at version {data['version']})")
    elif command == "envoys":
        _table(("node", "region", "replica", "acked", "lag", "state", "last NACK / refusal"),
               ((k, v.get("region"), v.get("replica"), _acked(v), v["lag"], v["state"], _nack(v))
                for k, v in data["envoys"].items()), f"Envoys (current version {data['version']})")
    elif command == "changes":
        for c in data["changes"]:
            console.print(_change_line(c), highlight=False)
    elif command == "status":
        show_status(data)


def show_status(data: dict) -> None:
    if data["empty"]:
        console.print("this prefix holds nothing yet: no version and no leader (is a discoverer running?)")
    leader = data["leader"]
    console.print(f"version {data['version']}   leader {leader['holder'] or '(none)'} (epoch {leader['epoch']})")
    replicas = data["replicas"]
    console.print(f"replicas {len(replicas)}: " + ", ".join(
        f"{k} v{v.get('version')} (lag {v.get('lag', 0)}"
        + (f", reads a replica at v{v.get('source_version')}" if v.get("reads") == "replica" else "")
        + f") {v.get('streams')} streams" for k, v in replicas.items()), highlight=False)
    e = data["envoys"]
    console.print(f"envoys: {e['in_sync']} in sync, {e['behind']} behind, {e['nacking']} NACKing"
                  + (f", {e['refused']} refused" if e.get("refused") else ""))


def _reads(v: dict) -> str:
    if v.get("reads") == "replica":
        return f"replica v{v.get('source_version')}"
    return v.get("reads") or "primary"


def _acked(v: dict) -> str:
    return " ".join(f"{k}={ver}" for k, ver in sorted((v.get("acked") or {}).items()))


def _nack(v: dict) -> str:
    if v.get("refused"):
        return f"refused: {v['refused']['detail'][:120]}"
    n = v.get("last_nack")
    return f"{n['type']} v{n['version']}: {n['detail'][:60]}" if n else ""


def _table(columns, rows, title: str) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for row in rows:
        table.add_row(*(str(x) if x is not None else "" for x in row))
    console.print(table)
