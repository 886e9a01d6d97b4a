"""Azure Table Storage: registry, links, sync state and leases, subscriptions, parked items, audit.

Open it with :func:`open_store` (Azure / Azurite) or :func:`open_memory_store` (the fake for
unit tests); both give a :class:`Store` of repositories implementing :mod:`shared.store.ports`.
The job queue is :mod:`shared.store.jobs`.
"""

from shared.store.azure.service import open_store
from shared.store.memory.store import open_memory_store
from shared.store.ports import Store

__all__ = ["Store", "open_memory_store", "open_store"]
