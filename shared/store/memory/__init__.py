"""In-memory fakes of the store ports, for fast unit tests of the engine and the webhooks.

They keep the Azure implementation's contract (tests/store runs the same contract suite on
both): the same typed errors, ETags that change on every write, all-or-nothing multi-row
writes, and synced fields normalised exactly as the table encoding would. Each method checks
and writes without awaiting in between, so under asyncio every operation is atomic.

One module per repository; :func:`~shared.store.memory.store.open_memory_store` bundles them.
"""

from shared.store.memory.audit import MemoryAuditTrail
from shared.store.memory.links import MemoryLinkStore
from shared.store.memory.parked import MemoryParkedStore
from shared.store.memory.registry import MemoryRegistry
from shared.store.memory.subscriptions import MemorySubscriptionStore
from shared.store.memory.sync_state import MemorySyncStateStore

__all__ = [
    "MemoryAuditTrail",
    "MemoryLinkStore",
    "MemoryParkedStore",
    "MemoryRegistry",
    "MemorySubscriptionStore",
    "MemorySyncStateStore",
]
