"""Per-app queries (vms.<app>.internal + <id>.vm.<app>.internal) against the real DNS server, and filters."""
from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace

import pytest

from discoverer.config import from_args
from discoverer.rules import Rules
from discoverer.sources.fly import FlySource
from discoverer.sources.fly_apps import parse_vms
from harness.wait import async_wait_until
from discoverer.validate import validate
from shared.errors import ConfigError, RecordError
from shared.model import DEFAULT_ALLOWED_NETWORKS, parse_networks


def fleet(n: int, app: str, region: str = "ams", base: int = 0) -> list[tuple[str, str, str, str]]:
    return [(f"{base + i:014x}", app, f"fdaa:0:1::{base + i + 1:x}", region) for i in range(n)]


async def test_per_app_reads_only_the_named_apps_with_addresses_and_regions(dns_server):
    dns_server.set_builders(fleet(3, "builder", "ord") + fleet(2, "web", base=100))
    source = FlySource(dns_server.addr, timeout=1, per_app=True, apps=frozenset({"builder"}))
    answer = await source.fetch()
    assert sorted((r["id"], r["app"], r["ip"], r["region"]) for r in answer.records) == sorted(
        (i, a, ip, r) for i, a, ip, r in fleet(3, "builder", "ord"))
    assert len(source._per_app._addresses) == 3, "addresses are cached by machine id"
    dns_server.set_builders(fleet(2, "builder", "ord"))
    assert len((await source.fetch()).records) == 2
    assert len(source._per_app._addresses) == 2, "gone machines leave the cache"


async def test_a_big_org_wide_answer_switches_to_per_app(dns_server, monkeypatch):
    monkeypatch.setattr(FlySource, "AUTO_PER_APP", 5)
    dns_server.set_builders(fleet(6, "builder") + fleet(2, "web", base=100))
    source = FlySource(dns_server.addr, timeout=1, app_wanted=lambda app: app.startswith("build"))
    answer = await source.fetch()
    assert source.per_app
    assert {r["app"] for r in answer.records} == {"builder"} and len(answer.records) == 6


async def test_per_app_with_only_patterns_learns_names_first(dns_server):
    dns_server.set_builders(fleet(2, "bk-ord") + fleet(1, "bk-ams", base=50) + fleet(1, "web", base=100))
    source = FlySource(dns_server.addr, timeout=1, per_app=True,
                       app_wanted=lambda app: re.fullmatch(r"bk-.*", app) is not None)
    answer = await source.fetch()
    assert sorted({r["app"] for r in answer.records}) == ["bk-ams", "bk-ord"] and len(answer.records) == 3


def test_parse_vms_pairs_and_garbage():
    assert parse_vms(b"a1 ord,b2 ams") == [("a1", "ord"), ("b2", "ams")]
    out = parse_vms(b"a1 ord,,garbage,\xff\xfe x")
    assert out[0] == ("a1", "ord") and all(isinstance(x, RecordError) for x in out[1:]) and len(out) == 3


RULES = Rules(sni_template="{id}.builders.internal", port=443, allowed=parse_networks(DEFAULT_ALLOWED_NETWORKS))


def rec(bid: str, app: str, region: str) -> dict:
    return {"id": bid, "app": app, "region": region, "ip": "fdaa::1" if bid == "a" else "fdaa::2"}


@pytest.mark.parametrize("rules, kept", [
    (replace(RULES, app_patterns=(re.compile("build.*"),)), {"a"}),
    (replace(RULES, regions=frozenset({"ams"})), {"b"}),
    (replace(RULES, apps=frozenset({"web"}), regions=frozenset({"ams"})), {"b"}),
    (RULES, {"a", "b"}),
])
def test_app_patterns_and_regions_filter(rules, kept):
    seen = validate([rec("a", "builder", "ord"), rec("b", "web", "ams")], rules, 0.0)
    assert set(seen.builders) == kept and seen.ignored == 2 - len(kept)


def test_flags_for_filters_and_per_app():
    cfg = from_args(["--app", "builder", "--app", "bk-.*", "--region", "ORD", "--per-app"])
    assert cfg.rules.apps == frozenset({"builder"}) and [p.pattern for p in cfg.rules.app_patterns] == ["bk-.*"]
    assert cfg.rules.regions == frozenset({"ord"}) and cfg.per_app
    with pytest.raises(ConfigError):
        from_args(["--per-app"])
    with pytest.raises(ConfigError):
        from_args(["--app", "bk-(["])
    assert cfg.apps_refresh == 5.0 and from_args(["--app", "bk-.*", "--apps-refresh", "1.5"]).apps_refresh == 1.5
    with pytest.raises(ConfigError):
        from_args(["--app", "bk-.*", "--apps-refresh", "0"])


def wants_bk(app: str) -> bool:
    return re.fullmatch(r"bk-.*", app) is not None


async def poll_until_apps(source: FlySource, apps: set[str], timeout: float = 3.0) -> float:
    """Fetch like the loop does (every 50 ms) until the answer covers ``apps``; seconds it took."""
    async def covered() -> bool:
        return {r["app"] for r in (await source.fetch()).records} == apps

    started = time.monotonic()
    await async_wait_until(covered, timeout, interval=0.05, what=f"apps {sorted(apps)} polled", ignore=())
    return time.monotonic() - started


@pytest.mark.parametrize("mode", ["explicit", "automatic"])
async def test_an_app_created_later_is_polled_without_a_restart(dns_server, monkeypatch, mode):
    monkeypatch.setattr(FlySource, "AUTO_PER_APP", 5)
    others = fleet(6, "web", base=200) if mode == "automatic" else []  # makes the org-wide answer "too big"
    dns_server.set_builders(fleet(2, "bk-ord") + others)
    source = FlySource(dns_server.addr, timeout=1, per_app=mode == "explicit", app_wanted=wants_bk,
                       apps_refresh=0.3)
    await poll_until_apps(source, {"bk-ord"})
    assert source.per_app
    dns_server.set_builders(fleet(2, "bk-ord") + fleet(1, "bk-ams", base=50) + fleet(1, "web-2", base=90) + others)
    took = await poll_until_apps(source, {"bk-ord", "bk-ams"})
    assert took < 2.0, "learned at the next read of _apps.internal"
    dns_server.set_builders(fleet(2, "bk-ord") + others)  # bk-ams deleted: gone from _apps.internal and vms
    await poll_until_apps(source, {"bk-ord"})
    await asyncio.sleep(0.4)
    await source.fetch()
    assert "bk-ams" not in source._seen_apps, "an app with no machine left that _apps.internal no longer lists"


async def test_per_app_mode_reads_the_other_apps_addresses_to_check_intents_against(dns_server):
    """Only with check_others; one <app>.internal query per other app and kind, again every apps_refresh."""
    dns_server.set_builders(fleet(2, "builder") + fleet(2, "pg", base=100) + [("d0000000000001", "web", "127.0.0.9",
                                                                               "ams")])
    plain = FlySource(dns_server.addr, timeout=1, per_app=True, apps=frozenset({"builder"}))
    assert (await plain.fetch()).other_apps == {}
    source = FlySource(dns_server.addr, timeout=1, per_app=True, apps=frozenset({"builder"}), apps_refresh=0.1,
                       address_kinds=("AAAA", "A"), check_others=True)
    answer = await source.fetch()
    assert {r["app"] for r in answer.records} == {"builder"}
    assert answer.other_apps == {**{ip: "pg" for _, _, ip, _ in fleet(2, "pg", base=100)}, "127.0.0.9": "web"}
    dns_server.set_builders(fleet(2, "builder") + fleet(1, "pg", base=100))
    await asyncio.sleep(0.15)
    assert (await source.fetch()).other_apps == {fleet(1, "pg", base=100)[0][2]: "pg"}


async def test_an_app_missing_from_one_apps_answer_is_still_polled(dns_server):
    """A short _apps.internal answer never removes an app whose machines still answer."""
    dns_server.set_builders(fleet(2, "bk-ord") + fleet(1, "bk-ams", base=50))
    source = FlySource(dns_server.addr, timeout=1, per_app=True, app_wanted=wants_bk, apps_refresh=0.1)
    await poll_until_apps(source, {"bk-ord", "bk-ams"})
    dns_server.set_builders(fleet(2, "bk-ord") + fleet(1, "bk-ams", base=50),
                            extra={"_apps.internal": {"TXT": ["bk-ord"]}})
    await asyncio.sleep(0.2)
    for _ in range(3):
        assert {r["app"] for r in (await source.fetch()).records} == {"bk-ord", "bk-ams"}
        await asyncio.sleep(0.1)
    dns_server.set_builders(fleet(2, "bk-ord"), extra={"_apps.internal": {"TXT": [""]}})  # no names at all
    await asyncio.sleep(0.2)
    assert {r["app"] for r in (await source.fetch()).records} == {"bk-ord"}, "the known names are kept"


async def test_without_an_apps_answer_names_come_from_one_org_wide_answer(dns_server):
    dns_server.set_builders(fleet(2, "bk-ord") + fleet(1, "web", base=100),
                            extra={"_apps.internal": {"TXT": ["Not An App!"]}})
    source = FlySource(dns_server.addr, timeout=1, per_app=True, app_wanted=wants_bk)
    await poll_until_apps(source, {"bk-ord"})
