"""Graph subscription records on Table Storage, one partition per subscription id."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableEntity, UpdateMode
from azure.data.tables.aio import TableClient

from shared.store.azure.common import (
    query,
    required_utc,
)
from shared.store.errors import SubscriptionNotFound
from shared.store.keys import encode_key
from shared.store.records import SubscriptionRecord

_SUBSCRIPTION_ROW = "subscription"


def _subscription_from(entity: TableEntity) -> SubscriptionRecord:
    return SubscriptionRecord(
        subscription_id=entity["subscription_id"],
        mailbox_id=entity["mailbox_id"],
        resource=entity["resource"],
        client_state_hash=entity["client_state_hash"],
        expiration=required_utc(entity["expiration"]),
        lifecycle=bool(entity["lifecycle"]),
    )


class AzureSubscriptionStore:
    """PartitionKey = subscription id (spreads the webhook's lookups); the timers scan by property."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    async def put(self, record: SubscriptionRecord) -> None:
        entity = {
            "PartitionKey": encode_key(record.subscription_id),
            "RowKey": _SUBSCRIPTION_ROW,
            "subscription_id": record.subscription_id,
            "mailbox_id": record.mailbox_id,
            "resource": record.resource,
            "client_state_hash": record.client_state_hash,
            "expiration": record.expiration,
            "lifecycle": record.lifecycle,
        }
        await self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    async def get(self, subscription_id: str) -> SubscriptionRecord:
        try:
            entity = await self._table.get_entity(encode_key(subscription_id), _SUBSCRIPTION_ROW)
        except ResourceNotFoundError as exc:
            raise SubscriptionNotFound(subscription_id) from exc
        return _subscription_from(entity)

    async def delete(self, subscription_id: str) -> None:
        await self._table.delete_entity(encode_key(subscription_id), _SUBSCRIPTION_ROW)

    async def list_for_mailbox(self, mailbox_id: str) -> AsyncIterator[SubscriptionRecord]:
        async for entity in query(self._table, "mailbox_id eq @mailbox", {"mailbox": mailbox_id}):
            yield _subscription_from(entity)

    async def list_all(self) -> AsyncIterator[SubscriptionRecord]:
        async for entity in self._table.list_entities():
            yield _subscription_from(entity)

    async def list_expiring(self, before: dt.datetime) -> AsyncIterator[SubscriptionRecord]:
        async for entity in query(self._table, "expiration lt @before", {"before": before}):
            yield _subscription_from(entity)
