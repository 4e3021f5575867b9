"""Write zone files for ``tools/dns_server.py`` that look like Fly's internal DNS.

    from tools.flyzone import FlyBuilder, write_zone
    write_zone("zone.json", [FlyBuilder("1a2b3c4d5e6f70", "web", "fdaa::1", "ams")])
    write_zone("zone.json", builders, mode="servfail")

A builder may be a ``FlyBuilder``, a tuple ``(id, app, ip, region)`` or a dict
with those keys. The zone gets:

- ``_instances.internal`` TXT: every record ``instance=..,app=..,ip=..,region=..``
  joined by ``;`` in one TXT value (split over 255-byte strings by the server);
  ``layout="per_record"`` puts each record in its own TXT resource record.
- ``vms.<app>.internal`` TXT ``<id> <region>,...`` and ``<app>.internal`` AAAA/A.
- ``_apps.internal`` TXT: the apps' names, comma-separated (plus ``apps``: apps
  with no machine).
- ``<id>.vm.<app>.internal`` AAAA (or A for IPv4 addresses).

Writes are atomic (a temp file in the same folder, then rename), so the
server never reads half a file. CLI (handy in a shell)::

    python tools/flyzone.py zone.json ID,APP,IP,REGION [...] [--mode servfail]
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, NamedTuple

INSTANCES = "_instances.internal"
APPS = "_apps.internal"


class FlyBuilder(NamedTuple):
    id: str
    app: str
    ip: str
    region: str

    @property
    def record(self) -> str:
        return f"instance={self.id},app={self.app},ip={self.ip},region={self.region}"


def as_builder(item) -> FlyBuilder:
    if isinstance(item, FlyBuilder):
        return item
    if isinstance(item, dict):
        return FlyBuilder(str(item["id"]), str(item["app"]), str(item["ip"]), str(item["region"]))
    return FlyBuilder(*(str(x) for x in item))


def _addr_type(ip: str) -> str | None:
    try:
        return "AAAA" if ipaddress.ip_address(ip).version == 6 else "A"
    except ValueError:
        return None  # a deliberately bad address: only the TXT record carries it


def build_zone(builders: Iterable, *, mode: str = "ok", layout: str = "joined",
               extra: dict | None = None, ttl: int | None = None, apps: Iterable[str] = ()) -> dict:
    """The zone as a dict; see the module docstring."""
    items = [as_builder(b) for b in builders]
    records = [b.record for b in items]
    if layout == "joined":
        txt = [";".join(records)] if records else []
    elif layout == "per_record":
        txt = records
    else:
        raise ValueError(f"layout must be 'joined' or 'per_record', not {layout!r}")
    zone: dict = {"_mode": mode, INSTANCES: {"TXT": txt}}
    if ttl is not None:
        zone["_ttl"] = ttl
    by_app: dict[str, list[FlyBuilder]] = {}
    for b in items:
        by_app.setdefault(b.app, []).append(b)
    for app, members in by_app.items():
        zone[f"vms.{app}.internal"] = {"TXT": [",".join(f"{b.id} {b.region}" for b in members)]}
        addrs: dict[str, list[str]] = {}
        for b in members:
            kind = _addr_type(b.ip)
            if kind:
                addrs.setdefault(kind, []).append(b.ip)
                zone.setdefault(f"{b.id}.vm.{app}.internal", {}).setdefault(kind, []).append(b.ip)
        if addrs:
            zone[f"{app}.internal"] = addrs
    names = sorted(set(by_app) | set(apps))
    if names:
        zone[APPS] = {"TXT": [",".join(names)]}
    if extra:
        zone.update(extra)
    return zone


def write_json_atomic(path: str | os.PathLike, data) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_zone(path: str | os.PathLike, builders: Iterable = (), *, mode: str = "ok",
               layout: str = "joined", extra: dict | None = None, ttl: int | None = None,
               apps: Iterable[str] = ()) -> dict:
    """Write the zone atomically; returns what was written."""
    zone = build_zone(builders, mode=mode, layout=layout, extra=extra, ttl=ttl, apps=apps)
    write_json_atomic(path, zone)
    return zone


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write a Fly-style zone file for tools/dns_server.py")
    p.add_argument("path")
    p.add_argument("builders", nargs="*", help="ID,APP,IP,REGION")
    p.add_argument("--mode", default="ok", choices=("ok", "servfail", "empty", "drop"))
    p.add_argument("--layout", default="joined", choices=("joined", "per_record"))
    a = p.parse_args(argv)
    write_zone(a.path, [b.split(",") for b in a.builders], mode=a.mode, layout=a.layout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
