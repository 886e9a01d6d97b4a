"""The link map on Table Storage: two rows per link (the Outlook side holds it, the CRM side points to it),
and an index of the mailboxes linking each CRM record (routing a CRM change reads it once, whatever
the number of mailboxes).

The index: partition ``r|<table>|<first character of the record id>`` (16 per table for GUIDs, so a
page's links are indexed in a few transactions), row ``<record id>|<mailbox>``. It is written before
a link's rows and removed after them, so it never misses a link; a row a crash leaves names a mailbox
that no longer links the record, whose run then finds no link. A mailbox partition's row
``meta|indexed`` says that every link of the mailbox is indexed (links written before the index
existed are indexed once by :meth:`AzureLinkStore.reindex`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, NoReturn

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableEntity, TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient

from shared.domain.model import ItemKind
from shared.store.azure.common import (
    OUTLOOK_SIDE,
    Clock,
    Entity,
    as_utc,
    crm_row_key,
    entity_etag,
    if_match,
    outlook_row_key,
    query,
    range_filter,
    without_nulls,
)
from shared.store.azure.transactions import TRANSACTIONS_AT_ONCE, at_most, submit_transaction
from shared.store.errors import (
    LinkAlreadyExists,
    LinkConflict,
)
from shared.store.keys import encode_key, key_range, row_key
from shared.store.ports import check_link_batch, create_each, transaction_chunks
from shared.store.records import Link
from shared.store.synced_fields import decode_link_bases, encode_link_bases


def _link_identity(link: Link) -> Entity:
    return {
        "PartitionKey": encode_key(link.mailbox_id),
        "kind": link.kind.value,
        "outlook_id": link.outlook_id,
        "crm_table": link.crm_table,
        "crm_id": link.crm_id,
    }


def _link_rows(link: Link) -> tuple[Entity, Entity]:
    """The Outlook-side row (all the data) and the CRM-side row (a pointer to it)."""
    identity = _link_identity(link)
    outlook_row = {
        **identity,
        "RowKey": outlook_row_key(link.kind, link.outlook_id),
        **without_nulls(
            outlook_change_key=link.outlook_change_key,
            crm_etag=link.crm_etag,
            outlook_hash=link.outlook_hash,
            crm_hash=link.crm_hash,
            updated_at=link.updated_at,
            crm_deleted=link.crm_deleted or None,
        ),
        **encode_link_bases(link.owned_by_user, link.field_bases),
    }
    return outlook_row, {**identity, "RowKey": crm_row_key(link.crm_table, link.crm_id)}


_BY_CRM = "r"
_INDEXED_ROW = "meta|indexed"
_INDEX_WRITES_AT_ONCE = 16


def _index_partition(crm_table: str, encoded_crm_id: str) -> str:
    return row_key(_BY_CRM, encode_key(crm_table), encoded_crm_id[:1])


def _index_row(link: Link) -> Entity:
    crm_id = encode_key(link.crm_id.lower())
    return {
        "PartitionKey": _index_partition(link.crm_table, crm_id),
        "RowKey": row_key(crm_id, encode_key(link.mailbox_id)),
        "mailbox_id": link.mailbox_id,
    }


def _link_from(mailbox_id: str, entity: TableEntity) -> Link:
    return Link(
        mailbox_id=mailbox_id,
        kind=ItemKind(entity["kind"]),
        outlook_id=entity["outlook_id"],
        crm_table=entity["crm_table"],
        crm_id=entity["crm_id"],
        outlook_change_key=entity.get("outlook_change_key"),
        crm_etag=entity.get("crm_etag"),
        outlook_hash=entity.get("outlook_hash"),
        crm_hash=entity.get("crm_hash"),
        **_bases(entity),
        crm_deleted=bool(entity.get("crm_deleted", False)),
        updated_at=as_utc(entity.get("updated_at")),
        etag=entity_etag(entity),
    )


def _bases(entity: Mapping[str, Any]) -> dict[str, Any]:
    owned, bases = decode_link_bases(entity)
    return {"owned_by_user": owned, "field_bases": bases}


def _link_conflict(exc: TableTransactionError) -> NoReturn:
    if exc.status_code in (404, 412):
        raise LinkConflict from exc
    raise exc


class AzureLinkStore:
    """PartitionKey = mailbox; row ``o|<kind>|<outlook id>`` holds the link, ``c|<table>|<crm id>``
    points to it."""

    def __init__(self, table: TableClient, clock: Clock) -> None:
        self._table = table
        self._clock = clock
        self._indexed: set[str] = set()  # a mailbox once indexed stays indexed

    async def _get_outlook_row(self, mailbox_id: str, kind: ItemKind, outlook_id: str) -> Link | None:
        try:
            entity = await self._table.get_entity(encode_key(mailbox_id), outlook_row_key(kind, outlook_id))
        except ResourceNotFoundError:
            return None
        return _link_from(mailbox_id, entity)

    async def get_by_outlook(self, mailbox_id: str, kind: ItemKind, outlook_id: str) -> Link | None:
        return await self._get_outlook_row(mailbox_id, kind, outlook_id)

    async def get_by_crm(self, mailbox_id: str, crm_table: str, crm_id: str) -> Link | None:
        """Two round trips: the CRM-side row names the Outlook-side row."""
        try:
            pointer = await self._table.get_entity(encode_key(mailbox_id), crm_row_key(crm_table, crm_id))
        except ResourceNotFoundError:
            return None
        return await self._get_outlook_row(mailbox_id, ItemKind(pointer["kind"]), pointer["outlook_id"])

    async def create(self, link: Link) -> Link:
        stamped = _stamp(link, self._clock())
        outlook_row, crm_row = _link_rows(stamped)
        await self._index([link])
        try:
            results = await submit_transaction(self._table, [("create", outlook_row), ("create", crm_row)])
        except TableTransactionError as exc:
            if exc.status_code == 409:
                raise LinkAlreadyExists("outlook" if exc.index == 0 else "crm") from exc
            raise
        return _as_stored(stamped, outlook_row, results[0]["etag"])

    async def create_many(self, links: Sequence[Link]) -> list[Link]:
        """Both rows of up to 50 links per insert-only transaction (at most 100 entities and 4 MiB:
        learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions), a few
        transactions at once, so an initial sync writes a delta page's links in a few round trips. A
        transaction that hits an existing row writes nothing; its links are then created one by one
        with :meth:`create`."""
        check_link_batch(links, read_earlier=False)
        await self._index(links)
        outcomes = await at_most(TRANSACTIONS_AT_ONCE, map(self._create_chunk, self._transactions(links)))
        refused = next((refusal for _, refusal in outcomes if refusal is not None), None)
        if refused is not None:
            raise refused
        return [link for created, _ in outcomes for link in created]

    async def _create_chunk(self, chunk: Sequence[_LinkRows]) -> tuple[list[Link], LinkAlreadyExists | None]:
        inserted = await self._insert(chunk)
        if inserted is None:
            return await create_each(self.create, [link for link, _ in chunk])
        return inserted, None

    def _transactions(self, links: Sequence[Link]) -> Iterator[list[_LinkRows]]:
        """The links stamped now with their rows, grouped into transactions of <= 100 entities, < 4 MiB."""
        now = self._clock()
        prepared = [(stamped, _link_rows(stamped)) for stamped in (_stamp(link, now) for link in links)]
        return transaction_chunks(prepared, weight=_rows_weight, max_weight=_TRANSACTION_PAYLOAD_BYTES)

    async def _insert(self, chunk: Sequence[_LinkRows]) -> list[Link] | None:
        """One transaction inserting both rows of each link; ``None`` (nothing written) if a row exists
        or the chunk names one row twice, which a transaction refuses as a whole."""
        rows = [row for _, pair in chunk for row in pair]
        if len({row["RowKey"] for row in rows}) < len(rows):
            return None
        try:
            results = await submit_transaction(self._table, [("create", row) for row in rows])
        except TableTransactionError as exc:
            if exc.status_code == 409:
                return None
            raise
        return _stored_links(chunk, results)

    async def update(self, link: Link) -> Link:
        """One transaction: replace the Outlook row if unchanged, re-assert the CRM row (must exist)."""
        [chunk] = self._transactions([link])
        [updated] = await self._replace(chunk)
        return updated

    async def update_many(self, links: Sequence[Link]) -> None:
        """:meth:`update` for up to 50 links per transaction (100 entities, 4 MiB at most)."""
        check_link_batch(links, read_earlier=True)
        for chunk in self._transactions(links):
            await self._replace(chunk)

    async def _replace(self, chunk: Sequence[_LinkRows]) -> list[Link]:
        """One transaction replacing each link's Outlook row If-Match its etag and re-asserting its CRM
        row (which must exist); LinkConflict if any changed or is gone (then nothing was written)."""
        operations: list[tuple[str, Entity, dict[str, Any]]] = []
        for link, (outlook_row, crm_row) in chunk:
            operations += [
                ("update", outlook_row, {"mode": UpdateMode.REPLACE, **if_match(_require_etag(link))}),
                ("update", crm_row, {"mode": UpdateMode.REPLACE}),
            ]
        try:
            results = await submit_transaction(self._table, operations)
        except TableTransactionError as exc:
            _link_conflict(exc)
        return _stored_links(chunk, results)

    async def delete(self, link: Link) -> None:
        etag = _require_etag(link)
        outlook_row, crm_row = _link_rows(link)
        try:
            await submit_transaction(
                self._table, [("delete", outlook_row, if_match(etag)), ("delete", crm_row)]
            )
        except TableTransactionError as exc:
            if exc.status_code != 404:
                _link_conflict(exc)
            if not await self._delete_leftover(outlook_row, crm_row, etag):
                return  # the record is linked to another item of the mailbox: still indexed
        index_row = _index_row(link)
        await self._table.delete_entity(index_row["PartitionKey"], index_row["RowKey"])

    async def _delete_leftover(self, outlook_row: Entity, crm_row: Entity, etag: str) -> bool:
        """A row of the pair is already gone: delete what is left of *this* link, one row at a
        time (the SDK ignores a missing row); a CRM row now pointing at another item stays (then
        ``False``: the record is still linked in the mailbox)."""
        partition = outlook_row["PartitionKey"]
        await self._table.delete_entity(partition, outlook_row["RowKey"], **if_match(etag))
        try:
            pointer = await self._table.get_entity(partition, crm_row["RowKey"])
        except ResourceNotFoundError:
            return True
        if (pointer["kind"], pointer["outlook_id"]) != (outlook_row["kind"], outlook_row["outlook_id"]):
            return False
        await self._table.delete_entity(partition, crm_row["RowKey"], **if_match(entity_etag(pointer)))
        return True

    async def move_outlook_id(self, link: Link, new_outlook_id: str) -> Link:
        etag = _require_etag(link)
        if new_outlook_id == link.outlook_id:
            return link
        old_outlook_row, _ = _link_rows(link)
        moved = _stamp(replace(link, outlook_id=new_outlook_id), self._clock())
        new_outlook_row, crm_row = _link_rows(moved)
        try:
            results = await submit_transaction(
                self._table,
                [
                    ("delete", old_outlook_row, if_match(etag)),
                    ("create", new_outlook_row),
                    ("update", crm_row, {"mode": UpdateMode.REPLACE}),
                ],
            )
        except TableTransactionError as exc:
            if exc.status_code == 409:
                raise LinkAlreadyExists("outlook") from exc
            _link_conflict(exc)
        return _as_stored(moved, new_outlook_row, results[1]["etag"])

    def _range(self, mailbox_id: str, kind: ItemKind | None) -> tuple[str, dict[str, Any]]:
        low, high = key_range(OUTLOOK_SIDE, kind.value) if kind else key_range(OUTLOOK_SIDE)
        return range_filter(), {"pk": encode_key(mailbox_id), "low": low, "high": high}

    async def list_links(self, mailbox_id: str, kind: ItemKind | None = None) -> AsyncIterator[Link]:
        query_filter, parameters = self._range(mailbox_id, kind)
        async for entity in query(self._table, query_filter, parameters):
            yield _link_from(mailbox_id, entity)

    async def count(self, mailbox_id: str, kind: ItemKind | None = None) -> int:
        query_filter, parameters = self._range(mailbox_id, kind)
        return sum([1 async for _ in query(self._table, query_filter, parameters, select=["RowKey"])])

    async def mailboxes_linking(self, crm_table: str, crm_id: str) -> set[str]:
        encoded = encode_key(crm_id.lower())
        low, high = key_range(encoded)
        parameters = {"pk": _index_partition(crm_table, encoded), "low": low, "high": high}
        rows = query(self._table, range_filter(), parameters, select=["mailbox_id"])
        return {str(row["mailbox_id"]) async for row in rows}

    async def indexed(self, mailbox_id: str) -> bool:
        if mailbox_id not in self._indexed:
            try:
                await self._table.get_entity(encode_key(mailbox_id), _INDEXED_ROW)
            except ResourceNotFoundError:
                return False
            self._indexed.add(mailbox_id)
        return True

    async def reindex(self, mailbox_id: str) -> int:
        links = [link async for link in self.list_links(mailbox_id)]
        await self._index(links)
        await self._table.upsert_entity({"PartitionKey": encode_key(mailbox_id), "RowKey": _INDEXED_ROW})
        self._indexed.add(mailbox_id)
        return len(links)

    async def _index(self, links: Sequence[Link]) -> None:
        """Index rows for ``links``, one upsert transaction per index partition (100 rows at most),
        a few at once."""
        partitions: dict[str, dict[str, Entity]] = {}
        for link in links:
            row = _index_row(link)
            partitions.setdefault(row["PartitionKey"], {})[row["RowKey"]] = row
        batches = [
            rows[start : start + _ENTITIES_PER_TRANSACTION]
            for rows in (list(partition.values()) for partition in partitions.values())
            for start in range(0, len(rows), _ENTITIES_PER_TRANSACTION)
        ]
        await at_most(
            _INDEX_WRITES_AT_ONCE,
            (
                submit_transaction(
                    self._table, [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in batch]
                )
                for batch in batches
            ),
        )


# Of an entity-group transaction's 4 MiB, leave room for the multipart framing of 100 operations.
_TRANSACTION_PAYLOAD_BYTES = 3 * 1024 * 1024
_ENTITIES_PER_TRANSACTION = 100
_OPERATION_FRAMING_BYTES = 1024


_LinkRows = tuple[Link, tuple[Entity, Entity]]


def _rows_weight(prepared: _LinkRows) -> int:
    """Generous estimate of a link's two rows in a transaction body (JSON, framing, type annotations)."""
    return sum(len(json.dumps(row, default=str)) + _OPERATION_FRAMING_BYTES for row in prepared[1])


def _stored_links(chunk: Sequence[_LinkRows], results: Sequence[Mapping[str, Any]]) -> list[Link]:
    """The links of a committed transaction (two operations per link, the Outlook row's first)."""
    return [
        _as_stored(link, outlook_row, results[2 * index]["etag"])
        for index, (link, (outlook_row, _)) in enumerate(chunk)
    ]


def _require_etag(link: Link) -> str:
    if link.etag is None:
        raise ValueError("this operation needs a link read from the store (it carries the etag)")
    return link.etag


def _stamp(link: Link, updated_at: dt.datetime) -> Link:
    return replace(link, updated_at=updated_at)


def _as_stored(link: Link, outlook_row: Entity, etag: str) -> Link:
    """The link as a later read returns it: new etag, synced fields as stored (maybe hashed)."""
    return replace(link, **_bases(outlook_row), etag=etag)
