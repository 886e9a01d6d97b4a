"""In-memory Graph subscription records."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

from shared.store.errors import SubscriptionNotFound
from shared.store.keys import encode_key
from shared.store.records import SubscriptionRecord


class MemorySubscriptionStore:
    def __init__(self) -> None:
        self._records: dict[str, SubscriptionRecord] = {}

    async def put(self, record: SubscriptionRecord) -> None:
        encode_key(record.subscription_id)
        self._records[record.subscription_id] = record

    async def get(self, subscription_id: str) -> SubscriptionRecord:
        try:
            return self._records[subscription_id]
        except KeyError as exc:
            raise SubscriptionNotFound(subscription_id) from exc

    async def delete(self, subscription_id: str) -> None:
        self._records.pop(subscription_id, None)

    async def list_for_mailbox(self, mailbox_id: str) -> AsyncIterator[SubscriptionRecord]:
        for record in list(self._records.values()):
            if record.mailbox_id == mailbox_id:
                yield record

    async def list_all(self) -> AsyncIterator[SubscriptionRecord]:
        for record in list(self._records.values()):
            yield record

    async def list_expiring(self, before: dt.datetime) -> AsyncIterator[SubscriptionRecord]:
        for record in list(self._records.values()):
            if record.expiration < before:
                yield record
