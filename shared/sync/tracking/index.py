"""The tracking index: why each message of a mailbox is tracked, and which threads are tracked.

The link map knows *that* an Outlook message is linked to a CRM email; tracking also needs to know
*why* (so removing the category untracks a message tracked by its category, but not one tracked
by a rule), which record it was set regarding (so leaving a tracked folder clears exactly that),
whether its attachments were copied, and, per conversation and per tracking token, the CRM email
and regarding a reply or forward inherits (correlation).

Azure Table Storage (Azurite locally), one table ``<prefix>tracking``: PartitionKey = the mailbox,
RowKey ``m|<message id>`` for a tracked message, ``c|<conversation id>`` / ``t|<token>`` for a
tracked thread. Every lookup is a point read; no addresses, subjects or bodies are stored.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.domain.mailbox_settings import CrmRecordRef
from shared.store.azure.service import table_service
from shared.store.azure.transactions import submit_transaction
from shared.store.keys import SEPARATOR, decode_key, encode_key, key_range, row_key

TABLE_SUFFIX = "tracking"


class TrackedVia(enum.StrEnum):
    """Why a message is tracked (the reason it stays tracked or is untracked later)."""

    CATEGORY = "category"
    FOLDER = "folder"
    KEPT = "kept"  # left a tracked folder: still tracked, regarding cleared
    RULE = "rule"
    CORRELATED = "correlated"


class ThreadKey(enum.StrEnum):
    """How a later message finds a tracked thread."""

    CONVERSATION = "c"
    TOKEN = "t"


@dataclass(frozen=True, slots=True)
class TrackedMessage:
    """One tracked message of a mailbox: its CRM email, why it is tracked, its regarding."""

    item_id: str
    crm_id: uuid.UUID
    via: TrackedVia
    regarding: CrmRecordRef | None = None
    attachments_copied: bool = False
    conversation_id: str | None = None
    token: str | None = None

    def thread_keys(self) -> list[tuple[ThreadKey, str]]:
        """The thread rows this message makes tracked (its conversation, its tracking token)."""
        keys = ((ThreadKey.CONVERSATION, self.conversation_id), (ThreadKey.TOKEN, self.token))
        return [(key, value) for key, value in keys if value]


@dataclass(frozen=True, slots=True)
class TrackedThread:
    """A tracked conversation (or tracking token): the CRM email and regarding its replies inherit."""

    crm_id: uuid.UUID
    regarding: CrmRecordRef | None = None


def _regarding_properties(regarding: CrmRecordRef | None) -> dict[str, Any]:
    if regarding is None:
        return {"regarding_table": None, "regarding_id": None}
    return {"regarding_table": regarding.table, "regarding_id": str(regarding.id)}


def _regarding_of(entity: dict[str, Any]) -> CrmRecordRef | None:
    table, record_id = entity.get("regarding_table"), entity.get("regarding_id")
    if isinstance(table, str) and isinstance(record_id, str):
        return CrmRecordRef(table=table, id=uuid.UUID(record_id))
    return None


def _message_of(item_id: str, entity: dict[str, Any]) -> TrackedMessage:
    return TrackedMessage(
        item_id=item_id,
        crm_id=uuid.UUID(entity["crm_id"]),
        via=TrackedVia(entity["via"]),
        regarding=_regarding_of(entity),
        attachments_copied=entity.get("attachments_copied") is True,
        conversation_id=entity.get("conversation_id"),
        token=entity.get("token"),
    )


_TRANSACTION = 100


def _message_row(item_id: str) -> str:
    return row_key("m", encode_key(item_id))


def _thread_row(key: ThreadKey, value: str) -> str:
    return row_key(key.value, encode_key(value))


class TrackingIndex:
    """Point reads and writes of the tracking rows (see the module docstring)."""

    def __init__(self, table: TableClient) -> None:
        self._table = table
        # Rows put since the last :meth:`flush`, by partition: a page's rows go in transactions of 100
        # instead of a request each. Reads see them; a delete drops them.
        self._pending: dict[str, dict[str, dict[str, Any]]] = {}

    def discard(self, mailbox_id: str) -> None:
        """Forget the mailbox's unflushed rows: a run that failed before its flush left them, and the
        next run (it holds the lease, perhaps in another worker) decides again; written later, they
        would overwrite what that run wrote."""
        self._pending.pop(encode_key(mailbox_id), None)

    async def flush(self, mailbox_id: str) -> None:
        """Write the mailbox's rows put since the last flush (entity-group transactions of 100, the
        limit: learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions).
        Called once a page is applied, before its delta link is stored."""
        rows = list(self._pending.pop(encode_key(mailbox_id), {}).values())
        for start in range(0, len(rows), _TRANSACTION):
            chunk = rows[start : start + _TRANSACTION]
            await submit_transaction(
                self._table, [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in chunk]
            )

    async def _get(self, mailbox_id: str, row: str) -> dict[str, Any] | None:
        pending = self._pending.get(encode_key(mailbox_id), {}).get(row)
        if pending is not None:
            return dict(pending)
        try:
            return dict(await self._table.get_entity(encode_key(mailbox_id), row))
        except ResourceNotFoundError:
            return None

    async def _put(self, mailbox_id: str, row: str, properties: dict[str, Any]) -> None:
        entity = {"PartitionKey": encode_key(mailbox_id), "RowKey": row}
        entity |= {name: value for name, value in properties.items() if value is not None}
        self._pending.setdefault(entity["PartitionKey"], {})[row] = entity

    async def _delete(self, mailbox_id: str, row: str) -> None:
        self._pending.get(encode_key(mailbox_id), {}).pop(row, None)
        await self._table.delete_entity(encode_key(mailbox_id), row)  # no error if already gone

    async def get_message(self, mailbox_id: str, item_id: str) -> TrackedMessage | None:
        entity = await self._get(mailbox_id, _message_row(item_id))
        return _message_of(item_id, entity) if entity is not None else None

    async def list_messages(self, mailbox_id: str) -> dict[str, TrackedMessage]:
        """Every tracked message of the mailbox by item id: one range scan (1,000 rows per request)
        instead of a point read per message when a run reads a whole folder."""
        low, high = key_range("m")
        rows = self._table.query_entities(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            parameters={"pk": encode_key(mailbox_id), "low": low, "high": high},
            results_per_page=1000,
        )
        found: dict[str, TrackedMessage] = {}
        pending = self._pending.get(encode_key(mailbox_id), {})
        async for entity in rows:
            item_id = decode_key(entity["RowKey"].split(SEPARATOR, 1)[1])
            found[item_id] = _message_of(item_id, dict(entity))
        for row, pending_row in pending.items():
            if low <= row < high:
                item_id = decode_key(row.split(SEPARATOR, 1)[1])
                found[item_id] = _message_of(item_id, dict(pending_row))
        return found

    async def put_message(self, mailbox_id: str, message: TrackedMessage) -> None:
        await self._put(
            mailbox_id,
            _message_row(message.item_id),
            {
                "crm_id": str(message.crm_id),
                "via": message.via.value,
                "attachments_copied": message.attachments_copied,
                "conversation_id": message.conversation_id,
                "token": message.token,
                **_regarding_properties(message.regarding),
            },
        )

    async def forget_message(self, mailbox_id: str, message: TrackedMessage) -> None:
        """Forget an untracked message and the threads it made tracked (if they still point at it)."""
        for key, value in message.thread_keys():
            thread = await self.get_thread(mailbox_id, key, value)
            if thread is not None and thread.crm_id == message.crm_id:
                await self._delete(mailbox_id, _thread_row(key, value))
        await self._delete(mailbox_id, _message_row(message.item_id))

    async def get_thread(self, mailbox_id: str, key: ThreadKey, value: str) -> TrackedThread | None:
        entity = await self._get(mailbox_id, _thread_row(key, value))
        if entity is None:
            return None
        return TrackedThread(uuid.UUID(entity["crm_id"]), _regarding_of(entity))

    async def put_thread(self, mailbox_id: str, key: ThreadKey, value: str, thread: TrackedThread) -> None:
        properties = {"crm_id": str(thread.crm_id), **_regarding_properties(thread.regarding)}
        await self._put(mailbox_id, _thread_row(key, value), properties)


async def open_tracking_index(
    *,
    connection_string: str | None = None,
    account_url: str | None = None,
    credential: AsyncTokenCredential | None = None,
    prefix: str = "crmsync",
) -> tuple[TrackingIndex, TableServiceClient]:
    """Connect as :func:`shared.store.azure.service.open_store` does and create the table if missing.

    Returns the index and the service client, which the caller closes.
    """
    service = table_service(
        connection_string=connection_string, account_url=account_url, credential=credential
    )
    try:
        table = await service.create_table_if_not_exists(prefix + TABLE_SUFFIX)
    except BaseException:
        await service.close()
        raise
    return TrackingIndex(table), service
