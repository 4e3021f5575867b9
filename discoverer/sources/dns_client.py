"""A DNS client for Fly's internal resolver: UDP, TCP on truncation, bounded in time."""
from __future__ import annotations

import asyncio
import struct
import time

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver

from shared.addr import is_ip, parse_hostport
from shared.errors import ConfigError, SourceError


TXT = 16
QR = 0x8000


class TxtAnswer:
    """A TXT answer read straight off the wire: dnspython spends milliseconds hashing
    one big TXT rdata into a set, on every changed org-wide answer."""

    __slots__ = ("flags", "_rcode", "payload")

    def __init__(self, flags: int, rcode: int, payload: bytes):
        self.flags, self._rcode, self.payload = flags, rcode, payload

    def rcode(self) -> int:
        return self._rcode


def _skip_name(wire: bytes, pos: int) -> int:
    while True:
        if pos >= len(wire):
            raise dns.exception.FormError("a name runs past the message")
        length = wire[pos]
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length == 0:
            return pos + 1
        pos += 1 + length


def parse_txt_wire(wire: bytes, query: bytes) -> TxtAnswer:
    """The answer to ``query`` (a TXT question): flags, rcode and its records joined by ';'."""
    if len(wire) < 12:
        raise dns.exception.FormError("short message")
    qid, flags, qdcount, ancount = struct.unpack_from("!4H", wire)
    qend = _skip_name(query, 12) + 4
    if qid != struct.unpack_from("!H", query)[0] or not flags & QR or qdcount != 1 \
            or wire[12:qend].lower() != query[12:qend].lower():
        raise dns.exception.FormError("the answer does not match the query")
    pos, chunks = qend, []
    for _ in range(ancount):
        pos = _skip_name(wire, pos)
        if pos + 10 > len(wire):
            raise dns.exception.FormError("a record runs past the message")
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", wire, pos)
        pos += 10
        end = pos + rdlen
        if end > len(wire):
            raise dns.exception.FormError("rdata runs past the message")
        if rtype == TXT:
            strings = []
            while pos < end:
                length = wire[pos]
                strings.append(wire[pos + 1:pos + 1 + length])
                pos += 1 + length
            if pos != end:
                raise dns.exception.FormError("a TXT string runs past its record")
            chunks.append(b"".join(strings))
        pos = end
    return TxtAnswer(flags, flags & 0xF, b";".join(chunks))


def join_txt(response: dns.message.Message | TxtAnswer) -> bytes:
    """Join the character-strings of each TXT record; records are joined by ';'."""
    if isinstance(response, TxtAnswer):
        return response.payload
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
    try:  # a bare IPv6 address is unambiguous here: the port is 53 unless bracketed with one
        return (value, 53) if is_ip(value) else parse_hostport(value, default_port=53, ip_only=True)
    except ValueError as exc:  # dnspython queries an address, never a name
        raise ConfigError(f"--dns-server: wants IP, IP:PORT or [IPv6]:PORT ({exc}; got {value!r})") from exc


class TooBig(SourceError):
    """The answer did not fit even over TCP."""


class DnsClient:
    """One query: UDP, TCP when truncated, bounded by ``timeout``."""

    TCP_STICKY = 60.0  # after a truncated answer, go straight to TCP for this long

    def __init__(self, server: str | None, timeout: float):
        self.host, self.port = parse_server(server)
        self.timeout = timeout
        self._tcp_until = 0.0
        self._last: tuple[bytes, dns.message.Message] | None = None  # last TCP answer, less its ID

    async def query(self, name: str, rdtype: str) -> dns.message.Message | TxtAnswer:
        try:
            # inside the try: a name from an answer may not be a valid DNS name (a label over 63 bytes)
            q = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
            if time.monotonic() < self._tcp_until:
                resp = await self._tcp(q)
                if resp.flags & dns.flags.TC:
                    raise TooBig(f"DNS {name} {rdtype}: the answer is truncated even over TCP")
                return self._check(name, rdtype, resp)
            # our own timeout: dnspython's (asyncio.wait_for) can swallow a cancellation on
            # Python 3.11, and a discoverer told to stop would poll on forever
            async with asyncio.timeout(self.timeout):
                resp = await dns.asyncquery.udp(q, self.host, timeout=None, port=self.port,
                                                ignore_trailing=True)
            if resp.flags & dns.flags.TC:
                # An org-wide answer rarely fits a datagram: skip the wasted UDP round trip for a while.
                self._tcp_until = time.monotonic() + self.TCP_STICKY
                resp = await self._tcp(q)
            if resp.flags & dns.flags.TC:
                raise TooBig(f"DNS {name} {rdtype}: the answer is truncated even over TCP")
        except (dns.exception.Timeout, TimeoutError) as exc:
            raise SourceError(f"DNS {name} {rdtype}: timeout after {self.timeout}s") from exc
        except (dns.exception.DNSException, OSError, EOFError) as exc:
            raise SourceError(f"DNS {name} {rdtype}: {exc.__class__.__name__}: {exc}") from exc
        return self._check(name, rdtype, resp)

    async def _tcp(self, q: dns.message.Message) -> dns.message.Message | TxtAnswer:
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
        if q.question[0].rdtype == dns.rdatatype.TXT:
            resp = parse_txt_wire(wire, query)
        else:
            resp = dns.message.from_wire(wire)
            if not q.is_response(resp):
                raise dns.exception.FormError("the TCP answer does not match the query")
        self._last = (wire[2:], resp)
        return resp

    @staticmethod
    def _check(name: str, rdtype: str, resp):
        rcode = resp.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise SourceError(f"DNS {name} {rdtype}: {dns.rcode.to_text(rcode)}")
        return resp
