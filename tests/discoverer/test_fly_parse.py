"""discoverer.sources.fly: parsing TXT answers, including hostile ones."""
from __future__ import annotations

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discoverer.rules import Rules
from discoverer.sources.fly import MAX_SEGMENT, join_txt, parse_instances, parse_server
from discoverer.validate import validate
from shared.errors import ConfigError, RecordError
from shared.model import DEFAULT_ALLOWED_NETWORKS, parse_networks
from tools.dns_server import split_strings

RULES = Rules(sni_template="{id}.builders.internal", port=443, allowed=parse_networks(DEFAULT_ALLOWED_NETWORKS))


def record(i: int, ip: str | None = None, app: str = "web", region: str = "ams") -> str:
    return f"instance={i:014x},app={app},ip={ip or f'fdaa:0:1::{i:x}'},region={region}"


def txt_response(*rrs: tuple[bytes, ...], name: str = "_instances.internal.") -> dns.message.Message:
    query = dns.message.make_query(name, "TXT")
    resp = dns.message.make_response(query)
    rrset = resp.find_rrset(resp.answer, query.question[0].name, dns.rdataclass.IN, dns.rdatatype.TXT, create=True)
    for strings in rrs:
        rrset.add(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings), ttl=5)
    return resp


def parsed(payload: bytes) -> tuple[list[dict], list[RecordError]]:
    items = list(parse_instances(payload))
    return [i for i in items if isinstance(i, dict)], [i for i in items if isinstance(i, RecordError)]


def test_one_record_maps_fly_keys_to_fields():
    records, errors = parsed(b"instance=1a2b3c4d5e6f70,app=web,ip=fdaa::1,region=ams")
    assert errors == []
    assert records == [{"id": "1a2b3c4d5e6f70", "app": "web", "ip": "fdaa::1", "region": "ams"}]


def test_whitespace_empty_segments_unknown_keys_and_key_case_are_tolerated():
    payload = b" ;; INSTANCE=abc , App=web,ip = fdaa::2 ,region=ord,cpu=4,flag ;;"
    records, errors = parsed(payload)
    assert errors == []
    assert records == [{"id": "abc", "app": "web", "ip": "fdaa::2", "region": "ord"}]


@pytest.mark.parametrize("payload", [b"app=web,ip=fdaa::1", b"instance=abc,app=web", b"garbage", b"=,=,="])
def test_a_record_without_id_or_ip_is_missing_field(payload):
    records, errors = parsed(payload)
    assert records == []
    assert [e.reason for e in errors] == ["missing_field"]


def test_a_repeated_key_makes_the_record_ambiguous():
    records, errors = parsed(b"instance=abc,ip=fdaa::1,ip=fdaa::2,app=web,region=ams")
    assert records == []
    assert [e.reason for e in errors] == ["duplicate_key"]


def test_non_utf8_and_huge_segments_are_rejected_without_losing_the_others():
    huge = b"instance=x,ip=fdaa::1,app=" + b"a" * (MAX_SEGMENT + 1)
    payload = b";".join([record(1).encode(), b"instance=\xff\xfe,ip=fdaa::9", huge, record(2).encode()])
    records, errors = parsed(payload)
    assert [r["id"] for r in records] == [f"{1:014x}", f"{2:014x}"]
    assert sorted(e.reason for e in errors) == ["not_utf8", "too_long"]


def test_join_txt_joins_strings_of_one_record_and_separates_records():
    one = record(1).encode()
    two = record(2).encode()
    resp = txt_response((one[:10], one[10:]), (two,))
    joined = join_txt(resp)
    assert sorted(joined.split(b";")) == sorted([one, two])


def test_join_txt_ignores_other_types():
    resp = txt_response((record(1).encode(),))
    resp.answer.append(dns.rrset.from_text("_instances.internal.", 5, "IN", "AAAA", "fdaa::1"))
    assert join_txt(resp) == record(1).encode()


def test_a_long_answer_split_over_many_255_byte_strings_parses_whole():
    text = ";".join(record(i) for i in range(200)).encode()
    strings = split_strings(text)
    assert len(strings) > 40 and max(map(len, strings)) == 255
    records, errors = parsed(join_txt(txt_response(strings)))
    assert errors == []
    assert len(records) == 200
    assert records[199] == {"id": f"{199:014x}", "app": "web", "ip": "fdaa:0:1::c7", "region": "ams"}


@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=30), st.integers(1, 60))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_splitting_at_any_byte_gives_the_same_records(cuts, count):
    text = ";".join(record(i) for i in range(count)).encode()
    points = sorted({c % len(text) for c in cuts} | {0, len(text)})
    strings = tuple(s for a, b in zip(points, points[1:]) for s in split_strings(text[a:b]))
    assert join_txt(txt_response(strings)) == text
    assert parsed(join_txt(txt_response(strings)))[0] == parsed(text)[0]


@given(st.binary(max_size=3000))
@settings(max_examples=500, deadline=None)
def test_garbage_bytes_never_raise(payload):
    for item in parse_instances(payload):
        assert isinstance(item, (dict, RecordError))
        if isinstance(item, dict):
            assert {"id", "ip"} <= set(item)
            assert all(isinstance(v, str) for v in item.values())


FLYISH = st.text(alphabet=st.sampled_from(list("instance=aprego,;:fd0123456789 \x00\xff\u00e9.-_[]%")), max_size=400)


@given(FLYISH)
@settings(max_examples=500, deadline=None)
def test_fly_shaped_garbage_never_raises_and_validation_only_rejects(text):
    items = list(parse_instances(text.encode("utf-8", "surrogatepass")))
    assert all(isinstance(i, (dict, RecordError)) for i in items)
    seen = validate([i for i in items if isinstance(i, dict)], RULES, now=0.0)
    for b in seen.builders.values():
        assert b.sni.endswith(".builders.internal")


HOSTILE = [
    ("10.0.0.1", "address_not_allowed"),
    ("2001:db8::1", "address_not_allowed"),
    ("::ffff:10.1.2.3", "address_not_allowed"),
    ("fdaa::1%eth0", "bad_address"),
    ("fdaa::1::2", "bad_address"),
    ("999.1.1.1", "bad_address"),
    ("127.1", "bad_address"),
    ("", "bad_address"),
    ("fdaa::1 evil", "bad_address"),
]


@pytest.mark.parametrize("ip,reason", HOSTILE)
def test_hostile_addresses_are_rejected(ip, reason):
    records, errors = parsed(f"instance=abc,app=web,ip={ip},region=ams".encode())
    if not records:  # an empty ip= still counts as present
        assert errors
        return
    seen = validate(records, RULES, now=0.0)
    assert seen.builders == {}
    assert [e.reason for e in seen.rejected] == [reason]


@pytest.mark.parametrize("fields,reason", [
    ("instance=a.b,app=web,ip=fdaa::1,region=ams", "bad_id"),
    ("instance=" + "a" * 200 + ",app=web,ip=fdaa::1,region=ams", "bad_id"),
    ("instance=-abc,app=web,ip=fdaa::1,region=ams", "bad_id"),
    ("instance=abc,app=we/b,ip=fdaa::1,region=ams", "bad_app"),
    ("instance=abc,app=web,ip=fdaa::1,region=a m s", "bad_region"),
    ("instance=abc_d,app=web,ip=fdaa::1,region=ams", "bad_sni"),
    ("instance=abc\u202e,app=web,ip=fdaa::1,region=ams", "bad_id"),
])
def test_hostile_fields_are_rejected(fields, reason):
    records, errors = parsed(fields.encode())
    assert errors == []
    seen = validate(records, RULES, now=0.0)
    assert seen.builders == {}
    assert [e.reason for e in seen.rejected] == [reason]


def test_loopback_and_mapped_addresses_are_normalized():
    records, _ = parsed(b"instance=a1,app=web,ip=::ffff:127.0.0.2,region=ams;instance=a2,app=web,ip=[FDAA:0::2],region=ams")
    seen = validate(records, RULES, now=0.0)
    assert {b.id: b.address for b in seen.builders.values()} == {"a1": "127.0.0.2", "a2": "fdaa::2"}
    assert seen.builders["a2"].route == "[fdaa::2]:443 a2"


@pytest.mark.parametrize("value,expected", [
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("127.0.0.1", ("127.0.0.1", 53)),
    ("[::1]:5353", ("::1", 5353)),
    ("[fdaa::3]", ("fdaa::3", 53)),
    ("fdaa::3", ("fdaa::3", 53)),
])
def test_parse_server(value, expected):
    assert parse_server(value) == expected


@pytest.mark.parametrize("value", ["127.0.0.1:notaport", "dns.internal:53", "127.0.0.1:0", "[::1]:99999"])
def test_parse_server_rejects_what_it_cannot_query(value):
    with pytest.raises(ConfigError):
        parse_server(value)


@given(st.lists(st.sampled_from([record(1), record(2), "", " ", "instance=x", "ip=fdaa::1,instance=\u00e9",
                                 "instance=a,ip=1,ip=2"]), max_size=12), st.binary(max_size=200))
@settings(max_examples=200, deadline=None)
def test_parsing_with_a_cache_gives_the_same_items(parts, noise):
    payload = ";".join(parts).encode() + b";" + noise
    cache: dict = {}
    plain = [repr(i) if isinstance(i, RecordError) else i for i in parse_instances(payload)]
    for _ in range(2):
        cached = [repr(i) if isinstance(i, RecordError) else i for i in parse_instances(payload, cache)]
        assert cached == plain


def test_validation_with_a_cache_gives_the_same_result_and_survives_unhashable_values():
    records = [{"id": "a1", "app": "web", "region": "ams", "ip": "fdaa::1"},
               {"id": "a2", "app": "web", "region": "ams", "ip": ["fdaa::2"]},
               {"id": "a3", "app": "web", "region": "ams", "ip": "10.0.0.1"}]
    cache: dict = {}
    plain = validate(records, RULES, 1.0)
    for now in (2.0, 3.0):
        cached = validate(records, RULES, now, cache)
        assert cached.builders == plain.builders
        assert [e.reason for e in cached.rejected] == [e.reason for e in plain.rejected] == ["bad_address", "address_not_allowed"]
    assert cached.builders["a1"].seen_at == 2.0  # when the record was first validated
