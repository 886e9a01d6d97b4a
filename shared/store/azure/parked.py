"""Parked items on Table Storage: failures retrying cannot fix, one row per item, keyed like the link rows."""

from __future__ import annotations

from collections.abc import AsyncIterator

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableEntity
from azure.data.tables.aio import TableClient

from shared.domain.model import ItemKind
from shared.store.azure.common import (
    Clock,
    crm_row_key,
    entity_etag,
    outlook_row_key,
    put_row,
    query,
    required_utc,
)
from shared.store.keys import encode_key
from shared.store.records import (
    ItemRef,
    ParkedItem,
)


def _parked_row(ref: ItemRef) -> str:
    if ref.outlook_id is not None:
        return outlook_row_key(ref.kind, ref.outlook_id)
    return crm_row_key(str(ref.crm_table), str(ref.crm_id))


def _parked_from(entity: TableEntity) -> ParkedItem:
    return ParkedItem(
        mailbox_id=entity["mailbox_id"],
        ref=ItemRef(
            kind=ItemKind(entity["kind"]),
            outlook_id=entity.get("outlook_id"),
            crm_table=entity.get("crm_table"),
            crm_id=entity.get("crm_id"),
        ),
        reason_code=entity["reason_code"],
        message=entity["message"],
        attempts=int(entity["attempts"]),
        first_failed_at=required_utc(entity["first_failed_at"]),
        last_failed_at=required_utc(entity["last_failed_at"]),
    )


class AzureParkedStore:
    """PartitionKey = mailbox; one row per item, keyed like the link rows."""

    def __init__(self, table: TableClient, clock: Clock) -> None:
        self._table = table
        self._clock = clock

    async def park(self, mailbox_id: str, ref: ItemRef, *, reason_code: str, message: str) -> ParkedItem:
        """Two round trips: read (for attempts), then insert or overwrite If-Match."""
        partition, row = encode_key(mailbox_id), _parked_row(ref)
        try:
            current: TableEntity | None = await self._table.get_entity(partition, row)
        except ResourceNotFoundError:
            current = None
        now = self._clock()
        item = ParkedItem(
            mailbox_id=mailbox_id,
            ref=ref,
            reason_code=reason_code,
            message=message,
            attempts=int(current["attempts"]) + 1 if current else 1,
            first_failed_at=required_utc(current["first_failed_at"]) if current else now,
            last_failed_at=now,
        )
        entity = {
            "PartitionKey": partition,
            "RowKey": row,
            "mailbox_id": mailbox_id,
            **ref.model_dump(mode="json", exclude_none=True),
            **item.model_dump(
                include={"reason_code", "message", "attempts", "first_failed_at", "last_failed_at"}
            ),
        }
        await put_row(self._table, entity, None if current is None else entity_etag(current), "parked item")
        return item

    async def list_parked(self, mailbox_id: str | None = None) -> AsyncIterator[ParkedItem]:
        entities = (
            self._table.list_entities()
            if mailbox_id is None
            else self._table.query_entities("PartitionKey eq @pk", parameters={"pk": encode_key(mailbox_id)})
        )
        async for entity in entities:
            yield _parked_from(entity)

    async def remove(self, mailbox_id: str, ref: ItemRef) -> None:
        await self._table.delete_entity(encode_key(mailbox_id), _parked_row(ref))

    async def count(self, mailbox_id: str) -> int:
        rows = query(self._table, "PartitionKey eq @pk", {"pk": encode_key(mailbox_id)}, select=["RowKey"])
        return sum([1 async for _ in rows])
