"""The fast TXT reader agrees with dnspython on real answers and refuses garbage with FormError only."""
from __future__ import annotations

import dns.exception
import dns.message
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discoverer.sources.dns_client import join_txt, parse_txt_wire
from tools.dns_server import Responder, ZoneFile
from tools.flyzone import FlyBuilder, write_zone


@pytest.mark.parametrize("count, layout", [(0, "joined"), (1, "joined"), (500, "joined"), (40, "per_record")])
def test_it_reads_what_dnspython_reads(tmp_path, count, layout):
    zone = tmp_path / "z.json"
    write_zone(zone, [FlyBuilder(f"{n:014x}", "builder", f"fdaa::{n + 1:x}", "ord") for n in range(count)],
               layout=layout)
    query = dns.message.make_query("_INSTANCES.internal", "TXT", use_edns=0, payload=1232)
    wire = Responder(ZoneFile(zone)).answer(query.to_wire(), udp=False)
    fast = parse_txt_wire(wire, query.to_wire())
    slow = dns.message.from_wire(wire)
    assert fast.payload == join_txt(slow) and fast.rcode() == slow.rcode() and fast.flags == slow.flags


def test_an_answer_to_another_query_is_refused(tmp_path):
    zone = tmp_path / "z.json"
    write_zone(zone, [FlyBuilder("a" * 14, "builder", "fdaa::1", "ord")])
    query = dns.message.make_query("_instances.internal", "TXT")
    other = dns.message.make_query("vms.builder.internal", "TXT")
    wire = Responder(ZoneFile(zone)).answer(other.to_wire(), udp=False)
    with pytest.raises(dns.exception.FormError):
        parse_txt_wire(wire, query.to_wire())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_form_error(blob):
    query = dns.message.make_query("_instances.internal", "TXT").to_wire()
    try:
        parse_txt_wire(query[:2] + b"\x80\x00\x00\x01" + blob, query)
    except dns.exception.FormError:
        pass
