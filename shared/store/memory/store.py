"""Opening the in-memory store: every in-memory repository bundled as a :class:`Store`."""

from __future__ import annotations

from shared.store.memory.audit import MemoryAuditTrail
from shared.store.memory.common import Clock
from shared.store.memory.links import MemoryLinkStore
from shared.store.memory.parked import MemoryParkedStore
from shared.store.memory.registry import MemoryRegistry
from shared.store.memory.subscriptions import MemorySubscriptionStore
from shared.store.memory.sync_state import MemorySyncStateStore
from shared.store.ports import Store
from shared.store.records import utc_now


async def _nothing_to_close() -> None:
    return None


def open_memory_store(*, clock: Clock = utc_now) -> Store:
    """A fresh, empty in-memory store (``close()`` is a no-op)."""
    return Store(
        registry=MemoryRegistry(clock),
        links=MemoryLinkStore(clock),
        sync_state=MemorySyncStateStore(clock),
        subscriptions=MemorySubscriptionStore(),
        parked=MemoryParkedStore(clock),
        audit=MemoryAuditTrail(),
        closer=_nothing_to_close,
    )
