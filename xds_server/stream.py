"""What both transports share: reading requests while waiting for new versions."""
from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from typing import AsyncIterator, Iterable

from shared import resources as rs
from shared.logs import LogOnce

from . import metrics
from .peers import Peer, Registry
from .snapshot import SnapshotSource

log = logging.getLogger(__name__)
_EOF = object()


class Stream:
    """One gRPC stream. Subclasses implement on_request() and responses()."""

    kind = "stream"
    incremental = False  # delta xDS (a replica that is delta only refuses the others)
    log_once = LogOnce(log)

    def __init__(self, cache: SnapshotSource, registry: Registry, types: tuple[str, ...] = rs.SUPPORTED,
                 identities: frozenset[str] | None = None):
        self.cache = cache
        self.identities = identities  # with mTLS: the node ids the client certificate allows
        self.registry = registry
        self.types = types  # type URLs this endpoint serves (both for ADS)
        self.peer: Peer | None = None
        self._nonces = itertools.count(1)

    def nonce(self) -> str:
        return str(next(self._nonces))

    def accepts(self, type_url: str) -> bool:
        if type_url in self.types and type_url in self.cache.types:  # this endpoint's, and this replica's
            return True
        metrics.BAD_REQUESTS.labels("unknown_type").inc()
        self.log_once.warning(f"type:{type_url}", "ignoring a request for unsupported type %r from %s",
                              type_url[:200], self.peer.node_id if self.peer else "?")
        return False

    async def serve(self, requests: AsyncIterator, write) -> None:
        inbox: collections.deque = collections.deque()
        wake = asyncio.Event()

        async def read() -> None:
            try:
                async for request in requests:
                    inbox.append(request)
                    wake.set()
            finally:
                inbox.append(_EOF)
                wake.set()

        self.cache.watch(wake)
        try:
            async with asyncio.TaskGroup() as tg:
                reader = tg.create_task(read())
                await self._loop(inbox, wake, write)
                reader.cancel()
        finally:
            self.cache.unwatch(wake)
            if self.peer is not None:
                self.registry.leave(self.peer)
                metrics.STREAMS.labels(self.kind).dec()

    async def _loop(self, inbox: collections.deque, wake: asyncio.Event, write) -> None:
        while True:
            wake.clear()
            while inbox:
                request = inbox.popleft()
                if request is _EOF:
                    return
                if self.peer is None:
                    self.peer = self.registry.join(self.node_of(request), self.kind, self.identities,
                                                   incremental=self.incremental)
                    metrics.STREAMS.labels(self.kind).inc()
                self.on_request(request)
            if self.peer is not None and self.cache.ready:
                for type_url, message in self.responses():
                    short = rs.SHORT.get(type_url, "?")
                    metrics.PUSHES.labels(short, self.kind).inc()
                    metrics.PUSH_BYTES.labels(short, self.kind).inc(len(message))
                    await write(message)
            if inbox:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tick()):  # not wait_for: it can lose a cancellation on 3.11
                    await wake.wait()

    def tick(self) -> float | None:
        """How long to wait at most before calling responses() again (None: until woken)."""
        return None

    def node_of(self, request):
        raise NotImplementedError

    def on_request(self, request) -> None:
        raise NotImplementedError

    def responses(self) -> Iterable[tuple[str, bytes]]:
        raise NotImplementedError
