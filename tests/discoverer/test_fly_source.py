"""FlySource against the real DNS server process (tools/dns_server.py)."""
from __future__ import annotations

import time

import pytest

from discoverer.sources.fly import FlySource
from shared.errors import SourceError


def builders(n: int, app: str = "web") -> list[tuple[str, str, str, str]]:
    return [(f"{i:014x}", app, f"fdaa:0:1::{i:x}", "ams") for i in range(n)]


async def test_fetch_reads_every_record(dns_server):
    dns_server.set_builders(builders(3))
    answer = await FlySource(dns_server.addr, timeout=1).fetch()
    assert answer.rejected == []
    assert [r["id"] for r in answer.records] == [b[0] for b in builders(3)]


@pytest.mark.parametrize("layout", ["joined", "per_record"])
async def test_500_records_are_truncated_over_udp_and_read_over_tcp(dns_server, layout):
    dns_server.set_builders(builders(500), layout=layout)
    answer = await FlySource(dns_server.addr, timeout=1).fetch()
    assert len(answer.records) == 500
    assert {r["ip"] for r in answer.records} == {b[2] for b in builders(500)}


async def test_a_changed_zone_is_seen_at_the_next_query(dns_server):
    source = FlySource(dns_server.addr, timeout=1)
    dns_server.set_builders(builders(2))
    assert len((await source.fetch()).records) == 2
    dns_server.set_builders(builders(5))
    assert len((await source.fetch()).records) == 5


async def test_bad_records_are_rejected_alongside_good_ones(dns_server):
    dns_server.set_builders([*builders(2), ("zz", "web", "not-an-ip", "ams")])
    answer = await FlySource(dns_server.addr, timeout=1).fetch()
    assert len(answer.records) == 3  # the address is checked by validation, not parsing
    dns_server.set_builders(builders(2), extra={"_instances.internal": {"TXT": [
        "instance=a1,app=web,ip=fdaa::1,region=ams;app=web,ip=fdaa::2;instance=\u00e9,ip=fdaa::3"]}})
    answer = await FlySource(dns_server.addr, timeout=1).fetch()
    assert [r["id"] for r in answer.records] == ["a1", "\u00e9"]
    assert [e.reason for e in answer.rejected] == ["missing_field"]


@pytest.mark.parametrize("mode,words", [("servfail", "SERVFAIL"), ("empty", "empty answer"), ("drop", "timeout")])
async def test_failures_raise_source_error(dns_server, mode, words):
    dns_server.set_builders(builders(2))
    dns_server.set_mode(mode)
    started = time.monotonic()
    with pytest.raises(SourceError, match=words):
        await FlySource(dns_server.addr, timeout=0.3).fetch()
    assert time.monotonic() - started < 1.5


async def test_a_missing_name_is_an_error_not_an_empty_set(dns_server):
    dns_server.set_builders(builders(1))
    with pytest.raises(SourceError, match="empty answer"):
        await FlySource(dns_server.addr, timeout=0.5, name="nothing.internal").fetch()


async def test_a_stopped_server_is_an_error(dns_server):
    addr = dns_server.addr
    dns_server.stop()
    started = time.monotonic()
    with pytest.raises(SourceError):
        await FlySource(addr, timeout=0.3).fetch()
    assert time.monotonic() - started < 1.5


async def test_a_repeated_answer_is_the_same_object_and_a_changed_one_is_seen(dns_server):
    dns_server.set_builders(builders(500))
    source = FlySource(dns_server.addr, timeout=1)
    first = await source.fetch()
    assert await source.fetch() is first  # over TCP: the bytes were equal, nothing parsed again
    moved = builders(500)
    moved[250] = (moved[250][0], "web", "fdaa:0:2::1", "ams")
    dns_server.set_builders(moved)
    second = await source.fetch()
    assert second is not first
    assert {r["id"]: r["ip"] for r in second.records}[moved[250][0]] == "fdaa:0:2::1"
    dns_server.set_mode("servfail")
    with pytest.raises(SourceError, match="SERVFAIL"):
        await source.fetch()


async def test_failures_on_the_tcp_path_raise_source_error_in_bounded_time(dns_server):
    dns_server.set_builders(builders(500))
    source = FlySource(dns_server.addr, timeout=0.3)
    await source.fetch()  # truncated: TCP from now on
    for fault in ("drop", "empty", "stopped"):
        if fault == "stopped":
            dns_server.stop()
        else:
            dns_server.set_mode(fault)
        started = time.monotonic()
        with pytest.raises(SourceError):
            await source.fetch()
        assert time.monotonic() - started < 1.0, fault
