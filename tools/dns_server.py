"""A small authoritative DNS server that answers like Fly.io's internal DNS.

Used by the tests, the end-to-end driver and the demo. It serves UDP and TCP
on the same port of a loopback address and answers from a JSON zone file::

    {
      "_instances.internal": {"TXT": ["instance=1a2b,app=web,ip=fdaa::1,region=ams;instance=..."]},
      "vms.web.internal":    {"TXT": ["1a2b ams,3c4d ord"]},
      "1a2b.vm.web.internal": {"AAAA": ["fdaa::1"]},
      "_mode": "ok",          # ok | servfail | empty | drop
      "_ttl": 5               # optional, seconds
    }

Names are case-insensitive and relative to the root (a trailing dot is fine).
Every TXT value is one resource record; a value longer than 255 bytes is
split over several <=255-byte character-strings, as Fly does with the
``_instances.internal`` answer. Other types (A, AAAA, ...) take their usual
text form. ``_mode`` makes the server misbehave on purpose: ``servfail``
answers SERVFAIL, ``empty`` answers NOERROR with no records, ``drop`` reads
the query and never answers (the client times out).

A UDP answer larger than the client's EDNS payload size (512 bytes without
EDNS) is sent with no records and the TC bit set, so clients retry over TCP.

The zone file is re-read when its (mtime, size, inode) changes, checked on
every query, and on SIGHUP. An unreadable or invalid file keeps the last good
zone (and logs why).

CLI::

    python tools/dns_server.py --listen 127.0.0.1:0 --zone zone.json [--port-file F]

prints the bound port on stdout (and writes it to F atomically), then serves
until SIGTERM/SIGINT. Importable::

    server = await DnsServer.start("127.0.0.1", 0, "zone.json")   # server.port
    ...; await server.stop()
    await serve_dns("127.0.0.1", 5353, "zone.json")   # runs until cancelled
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import functools
import json
import logging
import os
import signal
import socket
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

if __package__ in (None, ""):  # run as a script (python tools/x.py): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools import cli  # noqa: E402

log = logging.getLogger("dns_server")

MODES = ("ok", "servfail", "empty", "drop")
MAX_STRING = 255
NO_EDNS_PAYLOAD = 512
DEFAULT_TTL = 5
TCP_IDLE = 10.0  # seconds a TCP client may stay idle


def split_strings(value: str | bytes) -> tuple[bytes, ...]:
    """A TXT value as <=255-byte character-strings (one empty string for '')."""
    raw = value.encode() if isinstance(value, str) else value
    if not raw:
        return (b"",)
    return tuple(raw[i:i + MAX_STRING] for i in range(0, len(raw), MAX_STRING))


@dataclass
class Zone:
    records: dict[dns.name.Name, dict[int, list]] = field(default_factory=dict)
    mode: str = "ok"
    ttl: int = DEFAULT_TTL
    # zone-file name -> (its JSON value, owner, {rdtype: rdatas}, owner key): a reload redoes changed names only
    parsed: dict[str, tuple] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, data: dict, previous: "Zone | None" = None) -> "Zone":
        """The zone from its JSON form. With ``previous``, names whose value is unchanged are reused and
        only the owners of changed names are rebuilt (re-parsing 5,000 machines' names took 0.7 s)."""
        if not isinstance(data, dict):
            raise ValueError("the zone must be a JSON object")
        mode = data.get("_mode", "ok")
        if mode not in MODES:
            raise ValueError(f"_mode must be one of {MODES}, not {mode!r}")
        zone = cls(mode=mode, ttl=int(data.get("_ttl", DEFAULT_TTL)))
        old = previous.parsed if previous is not None else {}
        changed = {hit[3]: hit[1] for name, hit in old.items() if data.get(name) != hit[0]}  # gone or new value
        for name, types in data.items():
            if name.startswith("_") and not isinstance(types, dict):
                continue  # a setting such as _mode
            hit = old.get(name)
            if hit is None or hit[0] != types:
                hit = (types, dns.name.from_text(name.rstrip(".") + "."),
                       {dns.rdatatype.from_text(t): [_rdata(dns.rdatatype.from_text(t), v) for v in values]
                        for t, values in types.items()}, name.rstrip(".").lower())
                changed[hit[3]] = hit[1]
            zone.parsed[name] = hit
        # a dict copy keeps the stored hashes: dns.name.Name hashes and compares slowly
        zone.records = dict(previous.records) if previous is not None else {}
        for owner in changed.values():
            zone.records.pop(owner, None)
        for hit in zone.parsed.values():
            if hit[3] in changed:  # several names of one owner (case, trailing dot) merge
                zone.records.setdefault(hit[1], {}).update(hit[2])
        return zone


def _rdata(rdtype: int, value) -> dns.rdata.Rdata:
    return _rdata_of(rdtype, tuple(value) if isinstance(value, list) else value)


@functools.lru_cache(maxsize=1 << 16)
def _rdata_of(rdtype: int, value) -> dns.rdata.Rdata:
    """Rdata are immutable: one per (type, text), shared by every zone version (an app's AAAA list of
    5,000 addresses changes with every machine, its addresses mostly do not)."""
    if rdtype == dns.rdatatype.TXT:
        strings = [s for v in (value if isinstance(value, tuple) else [value]) for s in split_strings(v)]
        return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, rdtype, strings)
    return dns.rdata.from_text(dns.rdataclass.IN, rdtype, str(value))


WATCH_EVERY = 0.002  # seconds between checks of the zone file's stamp (a stat)


class ZoneFile:
    """The zone, re-read when the file changes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.zone = Zone()
        self._stamp: tuple | None = None
        self.reload(force=True)

    def reload(self, force: bool = False) -> None:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._stamp and not force:
                return
            zone = Zone.parse(json.loads(self.path.read_bytes()), previous=self.zone)
        except (OSError, ValueError, TypeError, AttributeError, dns.exception.DNSException) as exc:
            log.warning("zone %s not loaded (%s: %s); keeping the last good zone",
                        self.path, exc.__class__.__name__, exc)
            return
        self.zone, self._stamp = zone, stamp
        log.debug("zone %s loaded: %d names, mode %s", self.path, len(zone.records), zone.mode)

    def current(self) -> Zone:
        self.reload()
        return self.zone


class Responder:
    """Turns query bytes into answer bytes (or None: do not answer)."""

    def __init__(self, zone: ZoneFile):
        self.zone = zone
        self.queries = 0
        self._cache: dict[tuple[bool, bytes], bytes | None] = {}
        self._cache_zone: Zone | None = None

    def answer(self, wire: bytes, *, udp: bool) -> bytes | None:
        """The answer is a function of the zone and the query less its ID: cached per zone."""
        self.queries += 1
        zone = self.zone.current()
        if zone is not self._cache_zone or len(self._cache) > 1000:
            self._cache, self._cache_zone = {}, zone
        key = (udp, wire[2:])
        if key not in self._cache:
            self._cache[key] = self._answer(wire, zone, udp)
        out = self._cache[key]
        return None if out is None else wire[:2] + out[2:]

    def _answer(self, wire: bytes, zone: Zone, udp: bool) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return _formerr(wire)
        if zone.mode == "drop":
            return None
        resp = dns.message.make_response(query, our_payload=4096)
        resp.flags |= dns.flags.AA
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            resp.set_rcode(dns.rcode.NOTIMP if query.opcode() != dns.opcode.QUERY else dns.rcode.FORMERR)
            return resp.to_wire()
        if zone.mode == "servfail":
            resp.set_rcode(dns.rcode.SERVFAIL)
            return resp.to_wire()
        if zone.mode == "ok":
            self._fill(resp, query.question[0], zone)
        return self._encode(query, resp, udp)

    @staticmethod
    def _fill(resp: dns.message.Message, question: dns.rrset.RRset, zone: Zone) -> None:
        types = zone.records.get(question.name)
        if types is None:
            resp.set_rcode(dns.rcode.NXDOMAIN)
            return
        wanted = list(types) if question.rdtype == dns.rdatatype.ANY else [question.rdtype]
        for rdtype in wanted:
            rdatas = types.get(rdtype)
            if rdatas:
                rrset = resp.find_rrset(resp.answer, question.name, dns.rdataclass.IN, rdtype, create=True)
                rrset.update_ttl(zone.ttl)
                for rd in rdatas:
                    rrset.add(rd)

    @staticmethod
    def _encode(query: dns.message.Message, resp: dns.message.Message, udp: bool) -> bytes:
        limit = 65535
        if udp:
            limit = max(query.payload, NO_EDNS_PAYLOAD) if query.edns >= 0 else NO_EDNS_PAYLOAD
        try:
            return resp.to_wire(max_size=limit)
        except dns.exception.TooBig:
            pass
        resp.answer = []
        if udp:
            resp.flags |= dns.flags.TC
        else:
            resp.set_rcode(dns.rcode.SERVFAIL)  # more than one TCP message can hold
        return resp.to_wire()


def _formerr(wire: bytes) -> bytes | None:
    if len(wire) < 12:
        return None
    qid, flags = struct.unpack("!HH", wire[:4])
    return struct.pack("!HHHHHH", qid, 0x8000 | (flags & 0x7800) | dns.rcode.FORMERR, 0, 0, 0, 0)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, responder: Responder):
        self.responder = responder
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            out = self.responder.answer(data, udp=True)
        except Exception:  # never let one query kill the server
            log.exception("query from %s failed", addr)
            return
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)


def parse_listen(value: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT'."""
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ValueError(f"--listen needs HOST:PORT, not {value!r}")
    return host.strip("[]"), int(port)


class DnsServer:
    """UDP and TCP on one port. Use ``await DnsServer.start(...)``, then ``stop()``."""

    def __init__(self, zone_path: str | os.PathLike):
        self.zone = ZoneFile(zone_path)
        self.responder = Responder(self.zone)
        self.host = ""
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: set[asyncio.Task] = set()
        self._watch: asyncio.Task | None = None

    async def _watch_zone(self) -> None:
        """Load a changed zone as soon as it is written, as a real server has it loaded when it
        serves it; a query then never waits for the parse (80 ms for 500 machines)."""
        while True:
            await asyncio.sleep(WATCH_EVERY)
            self.zone.reload()

    @classmethod
    async def start(cls, host: str, port: int, zone_path: str | os.PathLike) -> "DnsServer":
        self = cls(zone_path)
        for _ in range(20 if port == 0 else 1):
            try:
                await self._bind(host, port)
                self._watch = asyncio.ensure_future(self._watch_zone())
                return self
            except OSError as exc:
                await self.stop()
                if exc.errno != errno.EADDRINUSE or port != 0:
                    raise
        raise OSError(errno.EADDRINUSE, f"no free port on {host} for both UDP and TCP")

    async def _bind(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self.responder), local_addr=(host, port), family=family)
        self.host, self.port = host, self._udp.get_extra_info("sockname")[1]
        self._tcp = await asyncio.start_server(self._serve_tcp, host, self.port, family=family,
                                               reuse_address=True)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE):  # not wait_for: it can swallow a cancel on 3.11
                    size = struct.unpack("!H", await reader.readexactly(2))[0]
                    wire = await reader.readexactly(size)
                out = self.responder.answer(wire, udp=False)
                if out is None:
                    continue  # drop mode: the client times out
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, OSError):
            pass
        except Exception:
            log.exception("tcp query failed")
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def reload(self) -> None:
        self.zone.reload(force=True)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for task in list(self._conns):
                task.cancel()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._tcp.wait_closed()
            self._tcp = None


async def serve_dns(host: str, port: int, zone_path: str | os.PathLike,
                    *, ready: asyncio.Future | None = None) -> None:
    """Serve until cancelled; ``ready`` (if given) receives the DnsServer once bound."""
    server = await DnsServer.start(host, port, zone_path)
    if ready is not None:
        ready.set_result(server)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def write_port_file(path: str, port: int) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    Path(tmp).write_text(f"{port}\n")
    os.replace(tmp, path)


async def _main(args: argparse.Namespace) -> None:
    host, port = parse_listen(args.listen)
    server = await DnsServer.start(host, port, args.zone)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    if args.port_file:
        write_port_file(args.port_file, server.port)
    print(server.port, flush=True)
    log.info("serving %s on %s port %d (udp+tcp)", args.zone, host, server.port)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT for UDP and TCP (port 0: any free port)")
    p.add_argument("--zone", required=True, help="JSON zone file, re-read when it changes")
    p.add_argument("--port-file", help="also write the bound port to this file")
    return cli.run(p, _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
