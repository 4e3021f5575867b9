"""Both transports against a small fake source (as go-control-plane tests its server against
mockConfigWatcher): they know the cache only through ``snapshot.SnapshotSource``, and serve whatever
types it lists, in its order, with make before break over its ``depends_on`` pairs."""
from __future__ import annotations

import asyncio

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from harness.wait import async_wait_until
from xds_server.delta import DeltaStream
from xds_server.peers import Registry
from xds_server.render import Rendered
from xds_server.snapshot import Delta, TypeSnapshot
from xds_server.sotw import SotwStream

BASE = "type.googleapis.com/test.Base"  # types no transport knows by name
NAMER = "type.googleapis.com/test.Namer"  # its resources name BASE's
EOF = object()


class FakeSource:
    """A SnapshotSource by hand: one view, snapshots set by the test, published on ``publish``."""

    def __init__(self, types: tuple[str, ...], depends: dict[str, str] | None = None):
        self.types = types
        self.depends = depends or {}
        self.ready, self.delta_only, self.routing = True, False, "fake"
        self.snaps: dict[str, TypeSnapshot] = {}
        self.history: dict[str, list[TypeSnapshot]] = {}
        self.watchers: set = set()
        self.views: list[str] = []  # open views, one entry per stream

    def set(self, type_url: str, version: int, names: dict[str, bytes], uses=frozenset()) -> TypeSnapshot:
        res = {n: Rendered.of(n, type_url, v, frozenset(uses)) for n, v in names.items()}
        snap = TypeSnapshot(type_url, version, res, frozenset(uses), seq=version)
        self.snaps[type_url] = snap
        self.history.setdefault(type_url, []).append(snap)
        return snap

    def publish(self) -> None:
        for callback in tuple(self.watchers):
            callback()

    def open_view(self, node: base_pb2.Node):
        self.views.append("v")
        return "v"

    def close_view(self, view) -> None:
        self.views.remove(view)

    def depends_on(self, type_url: str) -> str | None:
        return self.depends.get(type_url)

    def snapshot(self, view, type_url: str) -> TypeSnapshot:
        return self.snaps[type_url]

    def delta(self, view, old: TypeSnapshot, new: TypeSnapshot) -> Delta:
        updated = [r for n, r in sorted(new.resources.items()) if n not in old.resources or
                   old.resources[n].version != r.version]
        return Delta.build(new.type_url, new.version, updated, sorted(set(old.resources) - set(new.resources)))

    def matching(self, view, type_url: str, held: bytes) -> TypeSnapshot | None:
        return next((s for s in reversed(self.history[type_url]) if s.held_key() == held), None)

    def may_appear(self, type_url: str, name: str) -> bool:
        return False

    def ack_latency(self, version: int) -> float:
        return 0.0

    def watch(self, callback) -> None:
        self.watchers.add(callback)

    def unwatch(self, callback) -> None:
        self.watchers.discard(callback)


class Driven:
    """A stream served by hand: requests in, responses out, both queues."""

    def __init__(self, stream, response_type):
        self.stream, self.response_type = stream, response_type
        self.requests: asyncio.Queue = asyncio.Queue()
        self.sent: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.create_task(stream.serve(self.requests.get, self.sent.put, EOF))

    async def response(self):
        return self.response_type.FromString(await asyncio.wait_for(self.sent.get(), 5))

    async def wait_idle(self) -> None:
        """Until the writer sleeps with nothing queued: whatever was due is in ``sent``."""
        async def idle():
            return self.stream._waiter is not None and not self.stream._outbox

        await async_wait_until(idle, 5, what="the stream's writer idle")

    async def close(self) -> None:
        await self.requests.put(EOF)
        await asyncio.wait_for(self.task, 5)


def sotw(source: FakeSource, types: tuple[str, ...]) -> Driven:
    return Driven(SotwStream(source, Registry(source), types), discovery_pb2.DiscoveryResponse)


def delta(source: FakeSource, types: tuple[str, ...]) -> Driven:
    return Driven(DeltaStream(source, Registry(source), types), discovery_pb2.DeltaDiscoveryResponse)


def two_types() -> FakeSource:
    source = FakeSource((BASE, NAMER), {NAMER: BASE})
    source.set(BASE, 1, {"b1": b"\x08\x01"})
    source.set(NAMER, 1, {"n": b"\x08\x02"}, uses={"b1"})
    return source


NODE = base_pb2.Node(id="n1")


async def test_sotw_serves_the_sources_types_in_its_order_and_waits_for_the_named_ones():
    source = two_types()
    s = sotw(source, (BASE, NAMER))
    await s.requests.put(discovery_pb2.DiscoveryRequest(node=NODE, type_url=BASE))
    await s.requests.put(discovery_pb2.DiscoveryRequest(node=NODE, type_url=NAMER))
    first = await s.response()
    assert (first.type_url, [r.type_url for r in first.resources]) == (BASE, [BASE])
    await s.wait_idle()
    assert s.sent.empty(), "what names BASE's resources waits for their ACK"
    await s.requests.put(discovery_pb2.DiscoveryRequest(type_url=BASE, version_info="1", response_nonce=first.nonce))
    second = await s.response()
    assert second.type_url == NAMER and second.version_info == "1"
    await s.requests.put(discovery_pb2.DiscoveryRequest(type_url=NAMER, version_info="1", response_nonce=second.nonce))
    source.set(BASE, 2, {"b1": b"\x08\x01", "b2": b"\x08\x03"})
    source.publish()
    third = await s.response()
    assert (third.type_url, third.version_info, len(third.resources)) == (BASE, "2", 2)
    await s.close()
    assert source.views == [], "the stream let go of its view"


async def test_sotw_serves_a_type_it_was_never_told_about():
    source = FakeSource((NAMER,))
    source.set(NAMER, 4, {"n": b"\x08\x02"})
    s = sotw(source, (NAMER,))
    await s.requests.put(discovery_pb2.DiscoveryRequest(node=NODE, type_url=NAMER))
    got = await s.response()
    assert (got.type_url, got.version_info, [r.type_url for r in got.resources]) == (NAMER, "4", [NAMER])
    await s.close()


async def test_delta_orders_by_depends_on_and_a_reconnect_gets_nothing_it_holds():
    source = two_types()
    d = delta(source, (BASE, NAMER))
    for type_url in (BASE, NAMER):
        await d.requests.put(discovery_pb2.DeltaDiscoveryRequest(node=NODE, type_url=type_url))
    first = await d.response()
    assert first.type_url == BASE and [r.name for r in first.resources] == ["b1"]
    await d.wait_idle()
    assert d.sent.empty(), "what names BASE's resources waits for their ACK"
    await d.requests.put(discovery_pb2.DeltaDiscoveryRequest(type_url=BASE, response_nonce=first.nonce))
    second = await d.response()
    assert second.type_url == NAMER and [r.name for r in second.resources] == ["n"]
    await d.close()
    held = {r.name: r.version for r in first.resources}
    again = delta(source, (BASE,))
    await again.requests.put(discovery_pb2.DeltaDiscoveryRequest(node=NODE, type_url=BASE,
                                                                 initial_resource_versions=held))
    answer = await again.response()
    assert (answer.system_version_info, list(answer.resources), list(answer.removed_resources)) == ("1", [], [])
    assert answer.nonce.startswith("d"), "one message shared by every such reconnect, not one built for it"
    await again.close()


async def test_delta_reconnect_from_an_older_snapshot_gets_only_the_change():
    source = two_types()
    held = source.snaps[BASE].versions()
    source.set(BASE, 2, {"b1": b"\x08\x01", "b2": b"\x08\x03"})
    d = delta(source, (BASE,))
    await d.requests.put(discovery_pb2.DeltaDiscoveryRequest(node=NODE, type_url=BASE, initial_resource_versions=held))
    answer = await d.response()
    assert [r.name for r in answer.resources] == ["b2"], "b1 is held already: not resent"
    assert answer.nonce.startswith("d"), "the delta every stream of the view got from there"
    await d.close()


async def test_delta_reconnect_holding_what_the_namer_uses_gets_both_types_without_an_ack_between():
    source = two_types()
    d = delta(source, (BASE, NAMER))
    for type_url in (BASE, NAMER):
        held = source.snaps[type_url].versions()
        await d.requests.put(discovery_pb2.DeltaDiscoveryRequest(node=NODE, type_url=type_url,
                                                                 initial_resource_versions=held))
    got = [await d.response(), await d.response()]
    assert [(r.type_url, len(r.resources)) for r in got] == [(BASE, 0), (NAMER, 0)], \
        "the Envoy has b1 already: the NAMER answer need not wait for BASE's ACK (a fresh stream does)"
    await d.close()
