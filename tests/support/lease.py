"""Taking the leader lease in tests and benches, as the discoverer's election does."""
from __future__ import annotations

from shared.store import Lease, Store


async def acquire(store: Store, holder: str, ttl_ms: int, version_floor: int = 0) -> Lease | None:
    """The lease, or None when another holder has it."""
    return (await store.try_acquire(holder, ttl_ms, version_floor))[0]
