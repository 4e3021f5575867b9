"""Fly.io internal DNS: TXT ``_instances.internal``.

An answer holds records ``instance=<id>,app=<app>,ip=<addr>,region=<code>``
joined by ``;``, possibly split over several character-strings (joined
first). Unknown keys and empty segments are ignored; a record that repeats a
key (two ``ip=``) is ambiguous and rejected.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import struct
import time
from typing import Iterator

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver

from shared.errors import ConfigError, RecordError, SourceError

from . import Answer

log = logging.getLogger(__name__)

INSTANCES_NAME = "_instances.internal"
MAX_SEGMENT = 1024  # a sane record is about 90 bytes
KEY_MAP = {"instance": "id", "app": "app", "ip": "ip", "region": "region"}


def parse_instances(payload: bytes, cache: dict | None = None) -> Iterator[dict | RecordError]:
    """Yield one dict per record, or a RecordError for a record that is unusable.

    With ``cache`` (kept and bounded by the caller), a record seen before is
    not parsed again; the same dict is yielded, so callers must not change it.
    """
    for segment in payload.split(b";"):
        if cache is None:
            item = parse_record(segment)
        else:
            item = cache.get(segment)
            if item is None:
                item = cache[segment] = parse_record(segment)
        if item is not None:
            yield item


def parse_record(segment: bytes) -> dict | RecordError | None:
    """One ``instance=..,app=..,ip=..,region=..`` record; None for an empty segment."""
    segment = segment.strip()
    if not segment:
        return None
    if len(segment) > MAX_SEGMENT:
        return RecordError("too_long", f"{len(segment)} bytes")
    try:
        text = segment.decode("utf-8")
    except UnicodeDecodeError:
        return RecordError("not_utf8", repr(segment[:60]))
    fields: dict[str, str] = {}
    repeated = False
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if sep and key in KEY_MAP:
            repeated |= KEY_MAP[key] in fields
            fields[KEY_MAP[key]] = value.strip()
    if repeated:
        return RecordError("duplicate_key", repr(text[:80]))
    if "id" not in fields or "ip" not in fields:
        return RecordError("missing_field", repr(text[:80]))
    return fields


def join_txt(response: dns.message.Message) -> bytes:
    """Join the character-strings of each TXT record; records are joined by ';'."""
    chunks = []
    for rrset in response.answer:
        if rrset.rdtype != dns.rdatatype.TXT:
            continue
        for rdata in rrset:
            chunks.append(b"".join(rdata.strings))
    return b";".join(chunks)


def parse_server(value: str | None) -> tuple[str, int]:
    """'HOST:PORT', '[v6]:PORT', 'HOST' or None (the system resolver's first server)."""
    if not value:
        try:
            return dns.resolver.Resolver().nameservers[0], 53
        except (IndexError, dns.resolver.NoResolverConfiguration) as exc:
            raise SourceError("no --dns-server and no system resolver") from exc
    m = re.match(r"^\[(?P<h6>[^\]]+)\](?::(?P<p6>\d+))?$|^(?P<h>[^:]+)(?::(?P<p>\d+))?$", value)
    host, port = (value, "53") if not m else (m.group("h6") or m.group("h"), m.group("p6") or m.group("p") or "53")
    try:
        ipaddress.ip_address(host)  # dnspython queries an address, never a name
    except ValueError as exc:
        raise ConfigError(f"--dns-server {value!r}: want IP, IP:PORT or [IPv6]:PORT") from exc
    if not 0 < int(port) < 65536:
        raise ConfigError(f"--dns-server {value!r}: bad port")
    return host, int(port)


class DnsClient:
    """One query: UDP, TCP when truncated, bounded by ``timeout``."""

    TCP_STICKY = 60.0  # after a truncated answer, go straight to TCP for this long

    def __init__(self, server: str | None, timeout: float):
        self.host, self.port = parse_server(server)
        self.timeout = timeout
        self._tcp_until = 0.0
        self._last: tuple[bytes, dns.message.Message] | None = None  # last TCP answer, less its ID

    async def query(self, name: str, rdtype: str) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
        try:
            if time.monotonic() < self._tcp_until:
                return self._check(name, rdtype, await self._tcp(q))
            resp = await dns.asyncquery.udp(q, self.host, timeout=self.timeout, port=self.port,
                                            ignore_trailing=True)
            if resp.flags & dns.flags.TC:
                # An org-wide answer rarely fits a datagram: skip the wasted UDP round trip for a while.
                self._tcp_until = time.monotonic() + self.TCP_STICKY
                resp = await self._tcp(q)
        except (dns.exception.Timeout, TimeoutError) as exc:
            raise SourceError(f"DNS {name} {rdtype}: timeout after {self.timeout}s") from exc
        except (dns.exception.DNSException, OSError, EOFError) as exc:
            raise SourceError(f"DNS {name} {rdtype}: {exc.__class__.__name__}: {exc}") from exc
        return self._check(name, rdtype, resp)

    async def _tcp(self, q: dns.message.Message) -> dns.message.Message:
        """One query over TCP. An answer whose bytes (less the ID) equal the previous
        one is not parsed again: dnspython spends milliseconds on a 500-record TXT."""
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                query = q.to_wire()
                writer.write(struct.pack("!H", len(query)) + query)
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                wire = await reader.readexactly(size)
            finally:
                writer.close()
        if self._last is not None and wire[:2] == query[:2] and wire[2:] == self._last[0]:
            return self._last[1]
        resp = dns.message.from_wire(wire)
        if not q.is_response(resp):
            raise dns.exception.FormError("the TCP answer does not match the query")
        self._last = (wire[2:], resp)
        return resp

    @staticmethod
    def _check(name: str, rdtype: str, resp: dns.message.Message) -> dns.message.Message:
        rcode = resp.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise SourceError(f"DNS {name} {rdtype}: {dns.rcode.to_text(rcode)}")
        return resp


class FlySource:
    """The org-wide ``_instances.internal`` answer."""

    def __init__(self, server: str | None, *, timeout: float = 0.5, name: str = INSTANCES_NAME):
        self.dns = DnsClient(server, timeout)
        self.name = name
        self._last: tuple[bytes, Answer] | None = None
        self._records: dict[bytes, dict | RecordError | None] = {}  # raw record -> parsed

    async def fetch(self) -> Answer:
        resp = await self.dns.query(self.name, "TXT")
        payload = join_txt(resp)
        if not payload.strip(b"; "):
            # The discoverer itself is a started machine of the org, so a real
            # answer is never empty: treat it as a failure, keep the last set.
            raise SourceError(f"DNS {self.name}: empty answer ({dns.rcode.to_text(resp.rcode())})")
        if self._last is not None and self._last[0] == payload:
            return self._last[1]  # the same object: the loop skips validating it again
        if len(self._records) > 4 * payload.count(b";") + 1024:
            self._records.clear()
        answer = Answer()
        for item in parse_instances(payload, self._records):
            (answer.rejected if isinstance(item, RecordError) else answer.records).append(item)
        self._last = (payload, answer)
        return answer

    async def aclose(self) -> None:
        pass
