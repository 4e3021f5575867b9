"""What both transports share: a reader and a writer per stream, and who wakes the writer.

The reader (a task) handles each request as it arrives, ACKs included, and
queues what the request makes due (an initial response, a changed
subscription, the newer version or the listener an ACK lets go out). After a
new version the cache calls every stream (``SnapshotSource.watch``), which
queues what the version owes its Envoy; a stream with its response in flight
queues nothing. A timer does the same when an on-demand name's wait runs out
(``tick``). The writer (the handler's own task) sleeps until something is
queued and writes it in order. So an ACK costs no task switch, and a new
version costs one wake-up per stream that gets a response, none for the
others.

Large responses are written within a budget shared by the replica's streams
(``WriteBudget``): gRPC copies each message until it is sent, so a thousand
streams starting at once on 10,000 builders would otherwise hold a thousand
copies of a 2-3 MB response.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from typing import Awaitable, Callable, Iterable

from google.protobuf.message import DecodeError

from shared import resources as rs
from shared.errors import StreamRefused
from shared.logs import LogOnce

from . import metrics
from .peers import Peer, Registry
from .snapshot import SnapshotSource

log = logging.getLogger(__name__)
_EOF = object()
LARGE = 256 * 1024  # responses this big wait for the write budget; smaller ones never do


class WriteBudget:
    """Bytes of large responses being written at once, across the streams of one replica."""

    def __init__(self, limit: int = 32 * 1024 * 1024):
        self.limit = limit
        self.used = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    async def acquire(self, size: int) -> int:
        """Wait until ``size`` bytes fit (a response larger than the budget goes alone); what to release."""
        size = min(size, self.limit)
        if not self._waiting and self.used + size <= self.limit:
            self.used += size
            return size
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append((size, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(size)  # granted, then cancelled before it could write
            raise
        return size

    def release(self, size: int) -> None:
        self.used -= size
        while self._waiting and self.used + self._waiting[0][0] <= self.limit:
            size, granted = self._waiting.popleft()
            if not granted.done():  # a cancelled waiter is skipped
                self.used += size
                granted.set_result(None)


class Stream:
    """One gRPC stream. Subclasses implement on_request() and responses()."""

    transport = "stream"
    incremental = False  # delta xDS (a replica that is delta only refuses the others)
    log_once = LogOnce(log)

    def __init__(self, cache: SnapshotSource, registry: Registry, types: tuple[str, ...] = rs.SUPPORTED,
                 identities: frozenset[str] | None = None, budget: WriteBudget | None = None):
        self.cache = cache
        self.budget = budget or WriteBudget()
        self.identities = identities  # with mTLS: the node ids the client certificate allows
        self.registry = registry
        self.types = types  # type URLs this endpoint serves (both for ADS)
        self.peer: Peer | None = None
        self._nonces = itertools.count(1)
        self._outbox: collections.deque = collections.deque()  # (type_url, message), then _EOF
        self._waiter: asyncio.Future | None = None  # the writer sleeps on it
        self._timer: asyncio.TimerHandle | None = None  # the next on-demand deadline
        self._failed: Exception | None = None  # raised in the writer: a failure in a callback is the stream's
        self._on_version = self._queue_safely  # one bound method: watch and unwatch see the same object

    def nonce(self) -> str:
        """A nonce of this stream's own: digits only, never one of the shared messages' (snapshot.py)."""
        return str(next(self._nonces))

    def accepts(self, type_url: str) -> bool:
        if type_url in self.types and type_url in self.cache.types:  # this endpoint's, and this replica's
            return True
        metrics.BAD_REQUESTS.labels("unknown_type").inc()
        self.log_once.warning(f"type:{type_url}", "ignoring a request for unsupported type %r from %s",
                              type_url[:200], self.peer.node_id if self.peer else "?")
        return False

    async def serve(self, read: Callable[[], Awaitable], write: Callable[[bytes], Awaitable], eof=None) -> None:
        """Serve until the client ends its side (``read()`` returns ``eof``) or the call fails."""
        self.cache.watch(self._on_version)
        try:
            async with asyncio.TaskGroup() as tg:
                reader = tg.create_task(self._read(read, eof))
                await self._write(write)
                reader.cancel()
        finally:
            self.cache.unwatch(self._on_version)
            if self._timer is not None:
                self._timer.cancel()
            if self.peer is not None:
                self.registry.leave(self.peer)
                metrics.STREAMS.labels(self.transport).dec()

    async def _read(self, read, eof) -> None:
        try:
            while (request := await self._receive(read)) is not eof:
                if self.peer is None:
                    self.peer = self.registry.join(self.node_of(request), self.transport, self.identities,
                                                   incremental=self.incremental)
                    metrics.STREAMS.labels(self.transport).inc()
                self.on_request(request)
                self._queue()
                self.peer.handled += 1
        finally:
            self._outbox.clear()  # what was not written yet is moot: the Envoy is going away
            self._outbox.append(_EOF)
            self._wake()

    @staticmethod
    async def _receive(read):
        try:
            return await read()
        except DecodeError as exc:  # the client's fault, not ours
            metrics.BAD_REQUESTS.labels("malformed").inc()
            raise StreamRefused("INVALID_ARGUMENT", f"a request that is not a valid xDS message: {exc}") from exc

    async def _write(self, write) -> None:
        outbox = self._outbox
        loop = asyncio.get_running_loop()
        while True:
            while outbox:
                item = outbox.popleft()
                if item is _EOF:
                    return
                type_url, message = item
                metrics.count_push(type_url, self.transport, len(message))
                if len(message) < LARGE:
                    await write(message)
                else:
                    await self._write_large(write, message)
            if self._failed is not None:
                raise self._failed
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def _write_large(self, write, message: bytes) -> None:
        held = await self.budget.acquire(len(message))
        try:
            await write(message)
        finally:
            self.budget.release(held)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _queue(self) -> None:
        """Queue what the Envoy is owed now, wake the writer if that is anything, re-arm the timer."""
        if self.peer is None or not self.cache.ready:
            return
        outbox = self._outbox
        before = len(outbox)
        outbox.extend(self.responses())
        if len(outbox) > before:
            self.peer.queued += len(outbox) - before
            self._wake()
        delay = self.tick()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if delay is not None:
            self._timer = asyncio.get_running_loop().call_later(delay, self._queue_safely)

    def _queue_safely(self) -> None:
        """``_queue`` from outside the stream's tasks (the cache's version callback, the timer)."""
        try:
            self._queue()
        except Exception as exc:  # noqa: BLE001 - not the caller's failure: the writer raises it
            self._failed = exc
            self._wake()

    def _dependent(self, type_url: str) -> str | None:
        """The type whose resources name ``type_url``'s (the inverse of the cache's ``depends_on``)."""
        return next((t for t in self.cache.types if self.cache.depends_on(t) == type_url), None)

    def tick(self) -> float | None:
        """Seconds until responses() has something due without a request or a version (None: never)."""
        return None

    def node_of(self, request):
        raise NotImplementedError

    def on_request(self, request) -> None:
        raise NotImplementedError

    def responses(self) -> Iterable[tuple[str, bytes]]:
        raise NotImplementedError
