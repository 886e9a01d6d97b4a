"""In-memory parked items."""

from __future__ import annotations

from collections.abc import AsyncIterator

from shared.store.memory.common import Clock
from shared.store.records import (
    ItemRef,
    ParkedItem,
)


class MemoryParkedStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._items: dict[tuple[str, ItemRef], ParkedItem] = {}

    async def park(self, mailbox_id: str, ref: ItemRef, *, reason_code: str, message: str) -> ParkedItem:
        now = self._clock()
        current = self._items.get((mailbox_id, ref))
        item = ParkedItem(
            mailbox_id=mailbox_id,
            ref=ref,
            reason_code=reason_code,
            message=message,
            attempts=current.attempts + 1 if current else 1,
            first_failed_at=current.first_failed_at if current else now,
            last_failed_at=now,
        )
        self._items[(mailbox_id, ref)] = item
        return item

    async def list_parked(self, mailbox_id: str | None = None) -> AsyncIterator[ParkedItem]:
        for (mailbox, _), item in list(self._items.items()):
            if mailbox_id in (None, mailbox):
                yield item

    async def remove(self, mailbox_id: str, ref: ItemRef) -> None:
        self._items.pop((mailbox_id, ref), None)

    async def count(self, mailbox_id: str) -> int:
        return sum(1 for mailbox, _ in self._items if mailbox == mailbox_id)
