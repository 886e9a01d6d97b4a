"""The audit trail on Table Storage: insert-only, newest first within a mailbox's partition."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from azure.data.tables.aio import TableClient

from shared.store.azure.common import as_utc
from shared.store.azure.transactions import TRANSACTIONS_AT_ONCE, at_most, submit_transaction
from shared.store.keys import encode_key
from shared.store.records import AuditRecord

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MAX_MICROS = 10**19 - 1


def _audit_row(at: dt.datetime) -> str:
    """Inverted microseconds, so RowKey order (the only order Table Storage has) is newest first;
    a random suffix keeps two records of the same microsecond apart."""
    micros = (at - _EPOCH) // dt.timedelta(microseconds=1)
    return f"{_MAX_MICROS - micros:019d}-{uuid.uuid4().hex[:12]}"


_AUDIT_PER_TRANSACTION = 100  # the entity-group transaction limit


def _audit_entity(record: AuditRecord) -> dict[str, Any]:
    return {
        "PartitionKey": encode_key(record.mailbox_id),
        "RowKey": _audit_row(record.at),
        **record.model_dump(mode="json", exclude_none=True, exclude={"at"}),
        "at": record.at,
    }


class AzureAuditTrail:
    """PartitionKey = mailbox, RowKey = inverted timestamp; insert-only."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    async def append(self, record: AuditRecord) -> None:
        await self._table.create_entity(_audit_entity(record))

    async def append_many(self, records: Sequence[AuditRecord]) -> None:
        """Entity-group transactions of up to 100 inserts (one partition per mailbox): a page's audit
        trail in one round trip per 100 records, not one each, a few at once."""
        if len({record.mailbox_id for record in records}) > 1:
            raise ValueError("append_many takes the records of one mailbox")
        await at_most(
            TRANSACTIONS_AT_ONCE,
            (
                submit_transaction(self._table, [("create", _audit_entity(record)) for record in chunk])
                for chunk in (
                    records[start : start + _AUDIT_PER_TRANSACTION]
                    for start in range(0, len(records), _AUDIT_PER_TRANSACTION)
                )
            ),
        )

    async def list_recent(self, mailbox_id: str, limit: int = 100) -> list[AuditRecord]:
        records: list[AuditRecord] = []
        if limit <= 0:
            return records
        entities = self._table.query_entities(
            "PartitionKey eq @pk",
            parameters={"pk": encode_key(mailbox_id)},
            results_per_page=min(limit, 1000),
        )
        async for entity in entities:
            if len(records) >= limit:
                break
            fields = {name: value for name, value in entity.items() if name not in ("PartitionKey", "RowKey")}
            records.append(AuditRecord.model_validate({**fields, "at": as_utc(entity["at"])}))
        return records
