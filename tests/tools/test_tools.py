"""tools/: the Fly-like DNS server, the zone writer and the TLS stand-in builders."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import pytest

from harness.procs import wait_until
from tools.dns_server import DnsServer
from tools.flyzone import build_zone, write_zone
from tools.tls_backend import client_context, start_tls_backend


def big_fleet(n: int):
    return [(f"{i:014x}", "web", f"fdaa::{i:x}", "ams") for i in range(n)]


async def ask(port: int, name: str, rdtype: str = "TXT", *, tcp: bool = False, edns: int | None = None):
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else None, payload=edns or 0)
    if tcp:
        return await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=2)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=2)


@pytest.fixture
async def server(tmp_path):
    zone = tmp_path / "zone.json"
    write_zone(zone, big_fleet(2))
    srv = await DnsServer.start("127.0.0.1", 0, zone)
    srv.zone_path = zone
    yield srv
    await srv.stop()
    await srv.stop()


async def test_answers_fly_names_over_udp_and_tcp(server):
    txt = await ask(server.port, "_instances.internal")
    assert txt.flags & dns.flags.AA and not txt.flags & dns.flags.TC
    payload = b"".join(s for rr in txt.answer for rd in rr for s in rd.strings)
    assert payload.count(b"instance=") == 2
    vms = await ask(server.port, "VMS.web.internal.", tcp=True)
    assert b"".join(list(vms.answer[0])[0].strings) == b"00000000000000 ams,00000000000001 ams"
    aaaa = await ask(server.port, f"{1:014x}.vm.web.internal", "AAAA")
    assert [rd.address for rd in aaaa.answer[0]] == ["fdaa::1"]
    assert (await ask(server.port, "nope.internal")).rcode() == dns.rcode.NXDOMAIN
    assert (await ask(server.port, "web.internal", "TXT")).answer == []  # the name exists, the type not


@pytest.mark.parametrize("edns,limit", [(None, 512), (1232, 1232), (4096, 4096)])
async def test_udp_answers_over_the_payload_size_are_truncated(server, edns, limit):
    q = dns.message.make_query("_instances.internal", "TXT", use_edns=0 if edns else None, payload=edns or 0)
    seen = set()
    for n in (1, 5, 8, 12, 20, 30, 60, 100):
        write_zone(server.zone_path, big_fleet(n))
        full = await dns.asyncquery.tcp(q, "127.0.0.1", port=server.port, timeout=2)
        udp = await dns.asyncquery.udp(q, "127.0.0.1", port=server.port, timeout=2)
        too_big = len(full.to_wire()) > limit
        assert bool(udp.flags & dns.flags.TC) == too_big, n
        assert udp.answer == [] if too_big else udp.answer == full.answer
        strings = list(full.answer[0])[0].strings
        assert max(map(len, strings)) <= 255 and b"".join(strings).count(b"instance=") == n
        seen.add(too_big)
    assert seen == {True, False}


@pytest.mark.parametrize("mode,rcode", [("servfail", dns.rcode.SERVFAIL), ("empty", dns.rcode.NOERROR)])
async def test_modes(server, mode, rcode):
    write_zone(server.zone_path, big_fleet(2), mode=mode)
    for tcp in (False, True):
        resp = await ask(server.port, "_instances.internal", tcp=tcp)
        assert resp.rcode() == rcode and resp.answer == []


async def test_drop_mode_never_answers(server):
    write_zone(server.zone_path, big_fleet(2), mode="drop")
    with pytest.raises(dns.exception.Timeout):
        await dns.asyncquery.udp(dns.message.make_query("_instances.internal", "TXT"), "127.0.0.1",
                                 port=server.port, timeout=0.3)


async def test_a_broken_zone_file_keeps_the_last_good_zone(server):
    server.zone_path.write_text("{not json")
    resp = await ask(server.port, "_instances.internal")
    assert resp.rcode() == dns.rcode.NOERROR and resp.answer


def test_per_record_layout_and_bad_addresses():
    zone = build_zone([("a", "web", "fdaa::1", "ams"), ("b", "web", "not-an-ip", "ord")], layout="per_record")
    assert zone["_instances.internal"]["TXT"] == ["instance=a,app=web,ip=fdaa::1,region=ams",
                                                  "instance=b,app=web,ip=not-an-ip,region=ord"]
    assert "b.vm.web.internal" not in zone and zone["web.internal"] == {"AAAA": ["fdaa::1"]}


def test_the_cli_prints_its_port_and_reloads_on_sighup(tmp_path, procs):
    zone = tmp_path / "zone.json"
    zone.write_text(json.dumps(build_zone([("a1", "web", "fdaa::1", "ams")])))
    proc = procs.start_python(["tools/dns_server.py", "--listen", "127.0.0.1:0", "--zone", str(zone),
                               "--port-file", str(tmp_path / "port")], label="dns")
    port = int(wait_until(lambda: (tmp_path / "port").exists() and (tmp_path / "port").read_text().strip(), 10))
    assert proc.log().splitlines()[0] == str(port)

    def region() -> bytes:
        resp = asyncio.run(ask(port, "_instances.internal", tcp=True))
        return b"".join(list(resp.answer[0])[0].strings).rpartition(b"region=")[2]

    assert region() == b"ams"
    st = zone.stat()
    with open(zone, "r+") as f:  # same size, same inode, same mtime: only SIGHUP can tell
        f.write(zone.read_text().replace("ams", "ord"))
    os.utime(zone, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert region() == b"ams"
    proc.kill(signal.SIGHUP)
    wait_until(lambda: region() == b"ord", 3, what="reloaded on SIGHUP")
    proc.kill(signal.SIGTERM)
    assert proc.wait(5) == 0


async def test_tls_backend_names_itself_then_echoes_and_can_demand_client_certs(tmp_path):
    name = "abc.builders.internal"
    backend = await start_tls_backend("127.0.0.2", 0, name, tmp_path, mtls=True)
    try:
        reader, writer = await asyncio.open_connection(
            backend.host, backend.port, ssl=client_context(tmp_path, with_client_cert=True), server_hostname=name)
        assert await reader.readline() == f"builder={name}\n".encode()
        writer.write(b"ping\n")
        assert await reader.readline() == b"ping\n"
        writer.close()
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection(
                backend.host, backend.port, ssl=client_context(tmp_path), server_hostname=name)
            await reader.readline()  # TLS 1.3: the missing client cert shows on the first read
            await reader.readexactly(1)
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(backend.host, backend.port, ssl=client_context(tmp_path),
                                          server_hostname="other.builders.internal")
    finally:
        await backend.close()
        await backend.close()
