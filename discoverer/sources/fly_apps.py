"""Fly DNS, one app at a time: for orgs whose ``_instances.internal`` answer is too big.

``vms.<app>.internal`` TXT gives ``<id> <region>`` pairs (comma-separated);
``<id>.vm.<app>.internal`` AAAA gives each machine's 6PN address. Addresses
are cached by machine id (a machine keeps its address), so a steady poll is
one TXT query per app; new ids are resolved concurrently.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging

import dns.rcode
import dns.rdatatype

from shared.errors import RecordError, SourceError
from shared.model import ID_RE

from . import Answer
from .dns_client import DnsClient, join_txt

log = logging.getLogger(__name__)
CONCURRENCY = 32


def parse_vms(payload: bytes) -> list[tuple[str, str] | RecordError]:
    """'id region,id region' -> [(id, region)]; a malformed pair becomes a RecordError.

    An id must be one DNS label (it is queried as ``<id>.vm.<app>.internal``); the
    region is checked with the rest of the record by ``make_builder``."""
    out: list[tuple[str, str] | RecordError] = []
    for part in payload.replace(b";", b",").split(b","):
        part = part.strip()
        if not part:
            continue
        try:
            fields = part.decode("utf-8").split()
        except UnicodeDecodeError:
            out.append(RecordError("not_utf8", repr(part[:60])))
            continue
        if len(fields) != 2:
            out.append(RecordError("bad_vms_record", repr(part[:80])))
        elif not ID_RE.match(fields[0]):
            out.append(RecordError("bad_id", repr(fields[0][:80])))
        else:
            out.append((fields[0], fields[1]))
    return out


class PerAppSource:
    def __init__(self, client: DnsClient, kinds: tuple[str, ...] = ("AAAA",)):
        self.dns = client
        self.kinds = kinds  # address types asked in turn: AAAA (Fly's 6PN), then A where IPv4 is allowed
        self._addresses: dict[tuple[str, str], str] = {}  # (app, id) -> address
        self._sem = asyncio.Semaphore(CONCURRENCY)
        self.absent: set[str] = set()  # apps whose vms.<app>.internal was NXDOMAIN at the last fetch

    async def fetch(self, apps: list[str]) -> Answer:
        if not apps:
            raise SourceError("per-app queries need app names: give --app, or let one org-wide answer name them")
        answer = Answer()
        seen: set[tuple[str, str]] = set()
        absent: set[str] = set()
        for app in sorted(apps):
            pairs = await self._vms(app)
            if pairs is None:
                absent.add(app)
                continue
            wanted = [p for p in pairs if not isinstance(p, RecordError)]
            answer.rejected.extend(p for p in pairs if isinstance(p, RecordError))
            missing = dict.fromkeys(bid for bid, _ in wanted if (app, bid) not in self._addresses)
            await asyncio.gather(*(self._resolve(app, bid, answer) for bid in missing))
            for bid, region in wanted:
                address = self._addresses.get((app, bid))
                if address is not None:  # an id whose address did not resolve yet waits for the next poll
                    answer.records.append({"id": bid, "app": app, "region": region, "ip": address})
                    seen.add((app, bid))
        for key in set(self._addresses) - seen:
            del self._addresses[key]
        self.absent = absent
        return answer

    async def _vms(self, app: str) -> list | None:
        """The (id, region) pairs and RecordErrors of one app; None for NXDOMAIN (no started machine)."""
        resp = await self.dns.query(f"vms.{app}.internal", "TXT")
        if resp.rcode() == dns.rcode.NXDOMAIN:
            return None
        return parse_vms(join_txt(resp))

    async def _resolve(self, app: str, bid: str, answer: Answer) -> None:
        """The machine's address: AAAA, else the next of ``kinds`` (one query on Fly, where AAAA answers)."""
        name = f"{bid}.vm.{app}.internal"
        for kind in self.kinds:
            async with self._sem:
                try:
                    resp = await self.dns.query(name, kind)
                except SourceError as exc:
                    log.warning("%s; %s waits for the next poll", exc, bid)
                    return
            for rrset in resp.answer:
                if rrset.rdtype == dns.rdatatype.from_text(kind):
                    self._addresses[(app, bid)] = next(iter(rrset)).address
                    return
        answer.rejected.append(RecordError("no_address", name))

    async def addresses_of(self, apps: list[str]) -> dict[str, str]:
        """address -> app of every machine of ``apps``: ``<app>.internal`` AAAA (and A, by ``kinds``), one
        query per app and kind. An app whose query fails is left out (logged)."""
        found: dict[str, str] = {}

        async def one(app: str, kind: str) -> None:
            async with self._sem:
                try:
                    resp = await self.dns.query(f"{app}.internal", kind)
                except SourceError as exc:
                    log.warning("%s; the addresses of app %s are not known until the next read", exc, app)
                    return
            for rrset in resp.answer:
                if rrset.rdtype == dns.rdatatype.from_text(kind):
                    found.update((str(ipaddress.ip_address(r.address)), app) for r in rrset)

        await asyncio.gather(*(one(app, kind) for app in apps for kind in self.kinds))
        return found
