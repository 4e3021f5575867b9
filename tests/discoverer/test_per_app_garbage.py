"""Per-app answers that are garbage: never a crash, the good machines still route.

``PerAppSource.fetch`` is driven with a DnsClient stand-in that answers with
real ``dns.message`` responses (through the wire and back), so the parser runs
exactly as it does on Fly's answers; then the same garbage through the real
DNS server (tools/dns_server.py).
"""
from __future__ import annotations

import asyncio
import re

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.AAAA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discoverer.rules import Rules
from discoverer.sources.fly import FlySource
from discoverer.sources.fly_apps import PerAppSource
from discoverer.validate import validate
from shared.errors import RecordError, SourceError
from shared.model import DEFAULT_ALLOWED_NETWORKS, ID_RE, parse_networks

RULES = Rules(sni_template="{id}.builders.internal", port=443, allowed=parse_networks(DEFAULT_ALLOWED_NETWORKS))
APP = "builders"
TIMEOUT = object()  # the stand-in raises SourceError, as DnsClient does on a timeout


class ZoneDns:
    """Answers like ``DnsClient.query``: a real response message, through the wire and back."""

    def __init__(self, txt: dict[str, list[bytes] | object], aaaa: dict[str, str | None | object]):
        self.txt, self.aaaa = txt, aaaa

    async def query(self, name: str, rdtype: str) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype)
        resp = dns.message.make_response(q)
        value = (self.txt if rdtype == "TXT" else self.aaaa).get(name)
        if value is TIMEOUT:
            raise SourceError(f"DNS {name} {rdtype}: timeout after 0.5s")
        if value is None:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        else:
            kind = dns.rdatatype.from_text(rdtype)
            rrset = resp.find_rrset(resp.answer, q.question[0].name, dns.rdataclass.IN, kind, create=True)
            if rdtype == "TXT":
                rrset.add(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, kind, value))
            else:
                rrset.add(dns.rdtypes.IN.AAAA.AAAA(dns.rdataclass.IN, kind, value))
        return dns.message.from_wire(resp.to_wire())


def machine_id(n: int) -> str:
    return f"{n:014x}"


GOOD = st.integers(0, 40).map(lambda n: f"{machine_id(n)} {'ord' if n % 2 else 'ams'}".encode())
NASTY = st.sampled_from([b"", b" ", b",", b";", b"garbage", b"a b c", b"\xff\xfe ord", b"x" * 70 + b" ord",
                         b"-bad ord", b"a.b ord", b"\x00 \x00", b"0000000000a001 ord,garbage"])
PART = st.one_of(GOOD, NASTY, st.binary(max_size=40), st.text(max_size=20).map(str.encode))
SEP = st.sampled_from([b",", b";", b" ", b"", b",,"])
ADDRESS = st.one_of(st.integers(1, 0xFFFF).map(lambda n: f"fdaa:0:1::{n:x}"), st.none(), st.just(TIMEOUT))


@st.composite
def answers(draw):
    parts = draw(st.lists(PART, max_size=12))
    payload = b"".join(p + draw(SEP) for p in parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
    strings = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
    strings = [s[i:i + 255] for s in strings for i in range(0, max(len(s), 1), 255)]
    addresses = {f"{machine_id(n)}.vm.{APP}.internal": draw(ADDRESS) for n in range(41)}
    return strings, addresses  # a name not in addresses is NXDOMAIN


def pairs_in(strings: list[bytes]) -> set[tuple[str, str]]:
    """The well-formed pairs of one TXT record (its character-strings joined): an id that is one
    DNS label, then a region (any text: make_builder checks it with the rest of the record)."""
    out = set()
    for part in re.split(rb"[,;]", b"".join(strings)):
        try:
            fields = part.decode("utf-8").split()
        except UnicodeDecodeError:
            continue
        if len(fields) == 2 and ID_RE.match(fields[0]):
            out.add((fields[0], fields[1]))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers())
def test_garbage_vms_answers_never_crash_the_fetch(answer):
    strings, addresses = answer
    source = PerAppSource(ZoneDns({f"vms.{APP}.internal": strings}, addresses))
    for _ in range(2):  # the second fetch runs from the address cache
        got = asyncio.run(source.fetch([APP]))
        assert all(isinstance(e, RecordError) for e in got.rejected)
        for r in got.records:
            assert set(r) == {"id", "app", "region", "ip"} and all(isinstance(v, str) for v in r.values())
            assert ID_RE.match(r["id"]) and r["app"] == APP
            assert r["ip"] == addresses[f"{r['id']}.vm.{APP}.internal"]
        served = {(r["id"], r["region"]) for r in got.records}
        resolvable = {(b, reg) for b, reg in pairs_in(strings)
                      if isinstance(addresses.get(f"{b}.vm.{APP}.internal"), str)}
        assert served == resolvable
        validate(got.records, RULES, 0.0)  # and the loop's validation takes whatever the source gives


def test_a_failed_vms_query_fails_the_fetch_as_a_source_error():
    source = PerAppSource(ZoneDns({f"vms.{APP}.internal": TIMEOUT}, {}))
    try:
        asyncio.run(source.fetch([APP]))
    except SourceError:
        return
    raise AssertionError("a failed TXT query must fail the whole poll, never look like an empty app")


async def test_a_malformed_segment_is_rejected_and_the_good_machine_kept(dns_server):
    """The crash of the issue: 'TypeError: cannot unpack non-iterable RecordError object'."""
    dns_server.set_builders([], extra={f"vms.{APP}.internal": {"TXT": ["0000000000a001 ord,garbage"]},
                                       f"0000000000a001.vm.{APP}.internal": {"AAAA": ["fdaa:0:1::a1"]}})
    source = FlySource(dns_server.addr, timeout=1, per_app=True, apps=frozenset({APP}))
    answer = await source.fetch()
    assert answer.records == [{"id": "0000000000a001", "app": APP, "region": "ord", "ip": "fdaa:0:1::a1"}]
    assert [e.reason for e in answer.rejected] == ["bad_vms_record"]


APP_PART = st.one_of(st.sampled_from([b"bk-ord", b"bk-ams", b"BK-IAD", b" bk-fra ", b"web", b"Not An App!",
                                      b"a" * 70, b"-x", b"\xff\xfe"]), st.binary(max_size=20))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(APP_PART, max_size=8), st.sampled_from([b",", b";", b", "]))
def test_garbage_app_names_never_crash_a_fetch_and_only_app_names_are_queried(parts, sep):
    names = sep.join(parts)
    zone = ZoneDns({"_apps.internal": [names[i:i + 255] for i in range(0, max(len(names), 1), 255)],
                    "vms.bk-ord.internal": [b"0000000000a001 ord"]},
                   {"0000000000a001.vm.bk-ord.internal": "fdaa:0:1::a1"})
    asked = []
    query = zone.query

    async def recording(name, rdtype):
        asked.append(name)
        return await query(name, rdtype)

    zone.query = recording
    source = FlySource("127.0.0.1:53", per_app=True, app_wanted=lambda app: app.startswith("bk-"))
    source.dns = zone
    try:
        answer = asyncio.run(source.fetch())
    except SourceError:
        listed = names.replace(b";", b",").split(b",")
        assert not any(re.fullmatch(rb"bk-[a-z0-9_-]{0,60}", p.strip().lower()) for p in listed)
        return
    apps = {name.split(".")[1] for name in asked if name.startswith("vms.")}
    assert apps and all(re.fullmatch(r"bk-[a-z0-9_-]{0,60}", a) for a in apps)
    assert all(r["app"] in apps for r in answer.records)
