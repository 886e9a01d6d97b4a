"""The store ports on Azure Table Storage (azure.data.tables.aio; Azurite locally).

Atomicity comes from entity-group transactions (all rows in one partition, all-or-nothing:
learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions) and from
optimistic concurrency: ``create`` fails if the row exists, ``update``/``delete`` carry the
ETag read (``If-Match``) and fail with 412 if someone wrote in between
(learn.microsoft.com/azure/storage/blobs/concurrency-manage, "Optimistic concurrency").
Retrying transient failures is the azure-core pipeline's job (one retry layer); 409/412 are
never retried, they become the typed errors of :mod:`shared.store.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, NoReturn

from azure.core import MatchConditions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity, TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.domain.mailbox_settings import MailboxSettings
from shared.domain.model import ItemKind
from shared.store.errors import (
    CrmUserAlreadyRegistered,
    LeaseHeld,
    LeaseLost,
    LinkAlreadyExists,
    LinkConflict,
    MailboxAlreadyRegistered,
    MailboxNotFound,
    SettingsConflict,
    StaleWrite,
    SubscriptionNotFound,
)
from shared.store.keys import SEPARATOR, decode_key, encode_key, key_range, row_key
from shared.store.ports import Store, check_link_batch, create_each, transaction_chunks
from shared.store.records import (
    AuditRecord,
    DirtyMark,
    ItemRef,
    Lease,
    Link,
    Mailbox,
    MailboxState,
    ParkedItem,
    SubscriptionRecord,
    SyncState,
    check_reason_code,
    lease_expiry,
    utc_now,
)
from shared.store.synced_fields import decode_synced_fields, encode_synced_fields

Clock = Callable[[], dt.datetime]
Entity = dict[str, Any]

# "tracking" belongs to shared.sync.tracking (the email tracking index); created here with the rest.
TABLES = ("registry", "links", "syncstate", "subscriptions", "parked", "audit", "tracking")
_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,40}$")
# azure-core retry settings for every storage client (tables and the job queue): the one retry
# layer. Three retries with short back-off instead of azure-core's ten, so that when storage is
# down the webhook fails fast with a 5xx and Graph redelivers, rather than timing out.
PIPELINE_OPTIONS: dict[str, Any] = {
    "retry_total": 3,
    "retry_backoff_factor": 0.4,
    "retry_backoff_max": 4,
    "connection_timeout": 5,
    "read_timeout": 15,
    # aiohttp with trust_env looks proxies and ~/.netrc up in a worker thread on every request (~2 ms
    # per storage call on a busy 2-core host); trust the environment only when it names a proxy.
    "use_env_settings": bool(urllib.request.getproxies()),
}


# --- helpers shared by every repository -------------------------------------------------------


def _if_match(etag: str) -> dict[str, Any]:
    return {"etag": etag, "match_condition": MatchConditions.IfNotModified}


def _etag(entity: TableEntity) -> str:
    return str(entity.metadata["etag"])


def _without_nulls(**properties: Any) -> Entity:
    """Table Storage has no null: an absent property is how "no value" is stored."""
    return {name: value for name, value in properties.items() if value is not None}


def _utc(value: Any) -> dt.datetime | None:
    """The SDK's ``TablesEntityDatetime`` as a plain aware datetime (``None`` stays ``None``)."""
    if value is None:
        return None
    moment: dt.datetime = value
    return dt.datetime(
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second, moment.microsecond,
        tzinfo=dt.UTC,
    )  # fmt: skip


def _required_utc(value: Any) -> dt.datetime:
    moment = _utc(value)
    if moment is None:
        raise ValueError("stored row lacks a required timestamp")
    return moment


def _range_filter(extra: str = "") -> str:
    return "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high" + extra


# The most rows Table Storage returns per query page (learn.microsoft.com/rest/api/storageservices
# /query-timeout-and-pagination), so loading 10,000 links takes ten round trips.
_PAGE_SIZE = 1000


async def _query(
    table: TableClient, query_filter: str, parameters: dict[str, Any], select: list[str] | None = None
) -> AsyncIterator[TableEntity]:
    entities = table.query_entities(
        query_filter, parameters=parameters, select=select, results_per_page=_PAGE_SIZE
    )
    async for entity in entities:
        yield entity


# --- registry -------------------------------------------------------------------------------

_REGISTRY_PARTITION = "registry"
_MAILBOX = "mailbox"
_CRM_USER = "crmuser"


def _mailbox_row(mailbox_id: str) -> str:
    return row_key(_MAILBOX, encode_key(mailbox_id))


def _crm_user_row(crm_user_id: str) -> str:
    return row_key(_CRM_USER, encode_key(crm_user_id))


def _mailbox_from(entity: TableEntity) -> Mailbox:
    return Mailbox(
        mailbox_id=entity["mailbox_id"],
        upn=entity["upn"],
        crm_user_id=entity["crm_user_id"],
        crm_caller_object_id=entity["crm_caller_object_id"],
        enabled=bool(entity["enabled"]),
        state=MailboxState(entity["state"]),
        settings=MailboxSettings.model_validate_json(entity["settings"]),
        created_at=_required_utc(entity["created_at"]),
        updated_at=_required_utc(entity["updated_at"]),
        etag=_etag(entity),
    )


class AzureRegistry:
    """Registry rows live in ONE partition, so a mailbox row and its CRM-user row commit together."""

    def __init__(self, table: TableClient, clock: Clock) -> None:
        self._table = table
        self._clock = clock

    async def register(
        self,
        *,
        mailbox_id: str,
        upn: str,
        crm_user_id: str,
        crm_caller_object_id: str,
        settings: MailboxSettings | None = None,
        enabled: bool = True,
    ) -> Mailbox:
        now = self._clock()
        mailbox = Mailbox(
            mailbox_id=mailbox_id,
            upn=upn,
            crm_user_id=crm_user_id.lower(),
            crm_caller_object_id=crm_caller_object_id,
            enabled=enabled,
            settings=settings or MailboxSettings(),
            created_at=now,
            updated_at=now,
        )
        mailbox_entity = {
            "PartitionKey": _REGISTRY_PARTITION,
            "RowKey": _mailbox_row(mailbox.mailbox_id),
            "mailbox_id": mailbox.mailbox_id,
            "upn": mailbox.upn,
            "crm_user_id": mailbox.crm_user_id,
            "crm_caller_object_id": mailbox.crm_caller_object_id,
            "enabled": mailbox.enabled,
            "state": mailbox.state.value,
            "settings": mailbox.settings.model_dump_json(),
            "created_at": now,
            "updated_at": now,
        }
        crm_user_entity = {
            "PartitionKey": _REGISTRY_PARTITION,
            "RowKey": _crm_user_row(mailbox.crm_user_id),
            "crm_user_id": mailbox.crm_user_id,
            "mailbox_id": mailbox.mailbox_id,
        }
        try:
            results = await self._table.submit_transaction(
                [("create", mailbox_entity), ("create", crm_user_entity)]
            )
        except TableTransactionError as exc:
            if exc.status_code == 409:
                if exc.index == 0:
                    raise MailboxAlreadyRegistered(mailbox_id) from exc
                raise CrmUserAlreadyRegistered(mailbox.crm_user_id) from exc
            raise
        return replace(mailbox, etag=results[0]["etag"])

    async def _get_entity(self, mailbox_id: str) -> TableEntity:
        try:
            return await self._table.get_entity(_REGISTRY_PARTITION, _mailbox_row(mailbox_id))
        except ResourceNotFoundError as exc:
            raise MailboxNotFound(mailbox_id) from exc

    async def get_mailbox(self, mailbox_id: str) -> Mailbox:
        return _mailbox_from(await self._get_entity(mailbox_id))

    async def get_by_crm_user(self, crm_user_id: str) -> Mailbox:
        """Two round trips: the CRM-user row names the mailbox."""
        try:
            pointer = await self._table.get_entity(_REGISTRY_PARTITION, _crm_user_row(crm_user_id.lower()))
        except ResourceNotFoundError as exc:
            raise MailboxNotFound(crm_user_id) from exc
        return await self.get_mailbox(pointer["mailbox_id"])

    async def list_mailboxes(self, *, enabled_only: bool = False) -> AsyncIterator[Mailbox]:
        low, high = key_range(_MAILBOX)
        query_filter = _range_filter(" and enabled eq true" if enabled_only else "")
        async for entity in _query(
            self._table, query_filter, {"pk": _REGISTRY_PARTITION, "low": low, "high": high}
        ):
            yield _mailbox_from(entity)

    async def _merge(self, mailbox_id: str, **properties: Any) -> None:
        entity = {"PartitionKey": _REGISTRY_PARTITION, "RowKey": _mailbox_row(mailbox_id), **properties}
        try:  # unconditional MERGE still sends If-Match: *, so a missing mailbox is a 404
            await self._table.update_entity(entity, mode=UpdateMode.MERGE)
        except ResourceNotFoundError as exc:
            raise MailboxNotFound(mailbox_id) from exc

    async def set_enabled(self, mailbox_id: str, enabled: bool) -> None:
        await self._merge(mailbox_id, enabled=enabled, updated_at=self._clock())

    async def set_state(self, mailbox_id: str, state: MailboxState) -> None:
        await self._merge(mailbox_id, state=state.value, updated_at=self._clock())

    async def update_settings(self, mailbox: Mailbox, settings: MailboxSettings) -> Mailbox:
        if mailbox.etag is None:
            raise ValueError("update_settings needs a mailbox read from the registry (it carries the etag)")
        now = self._clock()
        entity = {
            "PartitionKey": _REGISTRY_PARTITION,
            "RowKey": _mailbox_row(mailbox.mailbox_id),
            "settings": settings.model_dump_json(),
            "updated_at": now,
        }
        try:
            result = await self._table.update_entity(entity, mode=UpdateMode.MERGE, **_if_match(mailbox.etag))
        except ResourceNotFoundError as exc:
            raise MailboxNotFound(mailbox.mailbox_id) from exc
        except ResourceModifiedError as exc:
            raise SettingsConflict from exc
        return replace(mailbox, etag=result["etag"], settings=settings, updated_at=now)

    async def unregister(self, mailbox_id: str) -> None:
        """Two round trips: read the mailbox (for its CRM user), then delete both rows at once."""
        try:
            entity = await self._get_entity(mailbox_id)
        except MailboxNotFound:
            return
        crm_user_row = {"PartitionKey": _REGISTRY_PARTITION, "RowKey": _crm_user_row(entity["crm_user_id"])}
        try:
            await self._table.submit_transaction(
                [("delete", entity, _if_match(_etag(entity))), ("delete", crm_user_row)]
            )
        except TableTransactionError as exc:
            if exc.status_code in (404, 412):
                raise StaleWrite("mailbox registration") from exc
            raise


# --- links ----------------------------------------------------------------------------------

_OUTLOOK_SIDE = "o"
_CRM_SIDE = "c"


def _outlook_row(kind: ItemKind, outlook_id: str) -> str:
    return row_key(_OUTLOOK_SIDE, kind.value, encode_key(outlook_id))


def _crm_row(crm_table: str, crm_id: str) -> str:
    return row_key(_CRM_SIDE, encode_key(crm_table), encode_key(crm_id))


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
        "RowKey": _outlook_row(link.kind, link.outlook_id),
        **_without_nulls(
            outlook_change_key=link.outlook_change_key,
            crm_etag=link.crm_etag,
            outlook_hash=link.outlook_hash,
            crm_hash=link.crm_hash,
            updated_at=link.updated_at,
        ),
        **encode_synced_fields(link.synced_fields),
    }
    return outlook_row, {**identity, "RowKey": _crm_row(link.crm_table, link.crm_id)}


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
        synced_fields=decode_synced_fields(entity),
        updated_at=_utc(entity.get("updated_at")),
        etag=_etag(entity),
    )


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

    async def _get_outlook_row(self, mailbox_id: str, kind: ItemKind, outlook_id: str) -> Link | None:
        try:
            entity = await self._table.get_entity(encode_key(mailbox_id), _outlook_row(kind, outlook_id))
        except ResourceNotFoundError:
            return None
        return _link_from(mailbox_id, entity)

    async def get_by_outlook(self, mailbox_id: str, kind: ItemKind, outlook_id: str) -> Link | None:
        return await self._get_outlook_row(mailbox_id, kind, outlook_id)

    async def get_by_crm(self, mailbox_id: str, crm_table: str, crm_id: str) -> Link | None:
        """Two round trips: the CRM-side row names the Outlook-side row."""
        try:
            pointer = await self._table.get_entity(encode_key(mailbox_id), _crm_row(crm_table, crm_id))
        except ResourceNotFoundError:
            return None
        return await self._get_outlook_row(mailbox_id, ItemKind(pointer["kind"]), pointer["outlook_id"])

    async def create(self, link: Link) -> Link:
        stamped = _stamp(link, self._clock())
        outlook_row, crm_row = _link_rows(stamped)
        try:
            results = await self._table.submit_transaction([("create", outlook_row), ("create", crm_row)])
        except TableTransactionError as exc:
            if exc.status_code == 409:
                raise LinkAlreadyExists("outlook" if exc.index == 0 else "crm") from exc
            raise
        return _as_stored(stamped, outlook_row, results[0]["etag"])

    async def create_many(self, links: Sequence[Link]) -> list[Link]:
        """Both rows of up to 50 links per insert-only transaction (at most 100 entities and 4 MiB:
        learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions), so an
        initial sync writes a delta page's links in a few round trips. A transaction that hits an
        existing row writes nothing; its links are then created one by one with :meth:`create`."""
        check_link_batch(links, read_earlier=False)
        created: list[Link] = []
        refused: LinkAlreadyExists | None = None
        for chunk in self._transactions(links):
            inserted = await self._insert(chunk)
            if inserted is None:
                inserted, refused_here = await create_each(self.create, [link for link, _ in chunk])
                refused = refused or refused_here
            created += inserted
        if refused is not None:
            raise refused
        return created

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
            results = await self._table.submit_transaction([("create", row) for row in rows])
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
                ("update", outlook_row, {"mode": UpdateMode.REPLACE, **_if_match(_require_etag(link))}),
                ("update", crm_row, {"mode": UpdateMode.REPLACE}),
            ]
        try:
            results = await self._table.submit_transaction(operations)
        except TableTransactionError as exc:
            _link_conflict(exc)
        return _stored_links(chunk, results)

    async def delete(self, link: Link) -> None:
        etag = _require_etag(link)
        outlook_row, crm_row = _link_rows(link)
        try:
            await self._table.submit_transaction(
                [("delete", outlook_row, _if_match(etag)), ("delete", crm_row)]
            )
        except TableTransactionError as exc:
            if exc.status_code != 404:
                _link_conflict(exc)
            await self._delete_leftover(outlook_row, crm_row, etag)

    async def _delete_leftover(self, outlook_row: Entity, crm_row: Entity, etag: str) -> None:
        """A row of the pair is already gone: delete what is left of *this* link, one row at a
        time (the SDK ignores a missing row); a CRM row now pointing at another item stays."""
        partition = outlook_row["PartitionKey"]
        await self._table.delete_entity(partition, outlook_row["RowKey"], **_if_match(etag))
        try:
            pointer = await self._table.get_entity(partition, crm_row["RowKey"])
        except ResourceNotFoundError:
            return
        if (pointer["kind"], pointer["outlook_id"]) == (outlook_row["kind"], outlook_row["outlook_id"]):
            await self._table.delete_entity(partition, crm_row["RowKey"], **_if_match(_etag(pointer)))

    async def move_outlook_id(self, link: Link, new_outlook_id: str) -> Link:
        etag = _require_etag(link)
        if new_outlook_id == link.outlook_id:
            return link
        old_outlook_row, _ = _link_rows(link)
        moved = _stamp(replace(link, outlook_id=new_outlook_id), self._clock())
        new_outlook_row, crm_row = _link_rows(moved)
        try:
            results = await self._table.submit_transaction(
                [
                    ("delete", old_outlook_row, _if_match(etag)),
                    ("create", new_outlook_row),
                    ("update", crm_row, {"mode": UpdateMode.REPLACE}),
                ]
            )
        except TableTransactionError as exc:
            if exc.status_code == 409:
                raise LinkAlreadyExists("outlook") from exc
            _link_conflict(exc)
        return _as_stored(moved, new_outlook_row, results[1]["etag"])

    def _range(self, mailbox_id: str, kind: ItemKind | None) -> tuple[str, dict[str, Any]]:
        low, high = key_range(_OUTLOOK_SIDE, kind.value) if kind else key_range(_OUTLOOK_SIDE)
        return _range_filter(), {"pk": encode_key(mailbox_id), "low": low, "high": high}

    async def list_links(self, mailbox_id: str, kind: ItemKind | None = None) -> AsyncIterator[Link]:
        query_filter, parameters = self._range(mailbox_id, kind)
        async for entity in _query(self._table, query_filter, parameters):
            yield _link_from(mailbox_id, entity)

    async def count(self, mailbox_id: str, kind: ItemKind | None = None) -> int:
        query_filter, parameters = self._range(mailbox_id, kind)
        return sum([1 async for _ in _query(self._table, query_filter, parameters, select=["RowKey"])])


# Of an entity-group transaction's 4 MiB, leave room for the multipart framing of 100 operations.
_TRANSACTION_PAYLOAD_BYTES = 3 * 1024 * 1024
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
    return replace(link, synced_fields=decode_synced_fields(outlook_row), etag=etag)


# --- sync state and the mailbox lease -----------------------------------------------------------

_LEASE_ROW = "lease"
_STATE = "state"
_DIRTY = "dirty"


class AzureSyncStateStore:
    """PartitionKey = mailbox; rows ``state|<resource>``, ``dirty|<resource>`` and ``lease``.

    The dirty flag is a row of its own so that marking it is a single insert: whichever
    notification creates the row is the one that made the resource dirty (and enqueues).
    """

    # Bound on the "seen dirty" hint; past it the hint starts over (it only orders two writes).
    _HINT_LIMIT = 10_000

    def __init__(self, table: TableClient, clock: Clock) -> None:
        self._table = table
        self._clock = clock
        # (mailbox, resource) pairs this process last left dirty: which write mark_dirty tries first.
        self._seen_dirty: set[tuple[str, str]] = set()

    async def dirty_resources(self, mailbox_id: str) -> list[str]:
        """One range query over the mailbox's ``dirty|`` rows."""
        low, high = key_range(_DIRTY)
        return [
            decode_key(entity["RowKey"].split(SEPARATOR, 1)[1])
            async for entity in _query(
                self._table,
                "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                {"pk": encode_key(mailbox_id), "low": low, "high": high},
            )
        ]

    async def get_state(self, mailbox_id: str, resource: str) -> SyncState:
        """One round trip: the state and dirty rows in one partition query."""
        encoded = encode_key(resource)
        state_row, dirty_row = row_key(_STATE, encoded), row_key(_DIRTY, encoded)
        rows = {
            entity["RowKey"]: entity
            async for entity in _query(
                self._table,
                # Spaces around the @names: the SDK finds parameters by splitting on spaces.
                "PartitionKey eq @pk and ( RowKey eq @state or RowKey eq @dirty )",
                {"pk": encode_key(mailbox_id), "state": state_row, "dirty": dirty_row},
            )
        }
        state: Entity = rows.get(state_row, {})
        dirty = rows.get(dirty_row)
        return SyncState(
            mailbox_id=mailbox_id,
            resource=resource,
            delta_link=state.get("delta_link"),
            last_sync_at=_utc(state.get("last_sync_at")),
            last_error=state.get("last_error"),
            dirty=dirty is not None,
            dirty_since=_utc(dirty["dirty_since"]) if dirty is not None else None,
            dirty_etag=_etag(dirty) if dirty is not None else None,
        )

    async def mark_dirty(self, mailbox_id: str, resource: str) -> bool:
        """One round trip in a burst's common cases: an insert when clean, a touch when already dirty.

        Two writes decide it, and either order is correct, so a per-process hint only picks the one
        likely to succeed at once: a pair this process left dirty is touched first (Merge Entity
        with ``If-Match: *`` updates an existing entity only, learn.microsoft.com/rest/api/
        storageservices/merge-entity; 404 = a run cleared it, so insert), any other pair is inserted
        first (Insert Entity: 409 = already dirty, so touch). Only the insert that creates the row
        returns True (enqueue then): at most one job per dirty resource. The touch changes the row's
        ETag, so a ``clear_dirty`` holding an ETag read before this notification fails and the flag
        stays set. Either write is durable before this returns; storage errors propagate (5xx).
        """
        pair = (mailbox_id, resource)
        keys = {"PartitionKey": encode_key(mailbox_id), "RowKey": row_key(_DIRTY, encode_key(resource))}
        now = self._clock()
        if pair in self._seen_dirty and await self._touch_dirty(keys, now):
            return False
        try:
            await self._table.create_entity(
                {
                    **keys,
                    "mailbox_id": mailbox_id,
                    "resource": resource,
                    "dirty_since": now,
                    "notified_at": now,
                }
            )
            made_dirty = True
        except ResourceExistsError:
            # False from the touch: a run cleared the flag just now; its delta starts after this change.
            await self._touch_dirty(keys, now)
            made_dirty = False
        if len(self._seen_dirty) >= self._HINT_LIMIT:
            self._seen_dirty.clear()
        self._seen_dirty.add(pair)
        return made_dirty

    async def _touch_dirty(self, keys: Entity, now: dt.datetime) -> bool:
        """MERGE the dirty row if it exists (a new ETag); False if there is none (404)."""
        try:
            await self._table.update_entity({**keys, "notified_at": now}, mode=UpdateMode.MERGE)
        except ResourceNotFoundError:
            return False
        return True

    async def clear_dirty(self, state: SyncState) -> bool:
        if state.dirty_etag is None:
            return True
        try:
            await self._table.delete_entity(
                encode_key(state.mailbox_id),
                row_key(_DIRTY, encode_key(state.resource)),
                **_if_match(state.dirty_etag),
            )
        except ResourceModifiedError:
            return False
        self._seen_dirty.discard((state.mailbox_id, state.resource))
        return True

    async def list_dirty(self) -> AsyncIterator[DirtyMark]:
        low, high = key_range(_DIRTY)
        async for entity in _query(
            self._table, "RowKey ge @low and RowKey lt @high", {"low": low, "high": high}
        ):
            yield DirtyMark(
                mailbox_id=entity["mailbox_id"],
                resource=entity["resource"],
                dirty_since=_required_utc(entity["dirty_since"]),
            )

    async def _write_state(self, mailbox_id: str, resource: str, mode: UpdateMode, **properties: Any) -> None:
        entity = {
            "PartitionKey": encode_key(mailbox_id),
            "RowKey": row_key(_STATE, encode_key(resource)),
            "mailbox_id": mailbox_id,
            "resource": resource,
            **properties,
        }
        await self._table.upsert_entity(entity, mode=mode)

    async def save_delta_link(self, mailbox_id: str, resource: str, delta_link: str) -> None:
        """Replaces the row, so a successful sync also clears ``last_error``."""
        await self._write_state(
            mailbox_id, resource, UpdateMode.REPLACE, delta_link=delta_link, last_sync_at=self._clock()
        )

    async def record_error(self, mailbox_id: str, resource: str, reason_code: str) -> None:
        await self._write_state(
            mailbox_id, resource, UpdateMode.MERGE, last_error=check_reason_code(reason_code)
        )

    async def reset(self, mailbox_id: str, resource: str) -> None:
        await self._write_state(mailbox_id, resource, UpdateMode.REPLACE)

    async def try_acquire(self, mailbox_id: str, owner: str, seconds: int) -> Lease:
        """Two round trips: read the lease row, then insert it (none yet) or overwrite it If-Match
        (expired). Of two racers exactly one write succeeds; the other gets LeaseHeld."""
        now = self._clock()
        entity = _lease_entity(mailbox_id, owner, lease_expiry(now, seconds))
        try:
            current = await self._table.get_entity(entity["PartitionKey"], _LEASE_ROW)
        except ResourceNotFoundError:
            try:
                result = await self._table.create_entity(entity)
            except ResourceExistsError as exc:
                raise LeaseHeld(None, None) from exc
            return _lease_from(mailbox_id, entity, result["etag"])
        holder, until = current["owner"], _required_utc(current["expires_at"])
        if until > now:
            raise LeaseHeld(holder, until)
        try:
            result = await self._table.update_entity(
                entity, mode=UpdateMode.REPLACE, **_if_match(_etag(current))
            )
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise LeaseHeld(None, None) from exc
        return _lease_from(mailbox_id, entity, result["etag"])

    async def renew(self, lease: Lease, seconds: int) -> Lease:
        """One round trip, If-Match the lease's ETag."""
        entity = _lease_entity(lease.mailbox_id, lease.owner, lease_expiry(self._clock(), seconds))
        try:
            result = await self._table.update_entity(entity, mode=UpdateMode.REPLACE, **_if_match(lease.etag))
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise LeaseLost from exc
        return _lease_from(lease.mailbox_id, entity, result["etag"])

    async def release(self, lease: Lease) -> None:
        # 412: taken over after expiry, so it is someone else's now and not ours to delete.
        with contextlib.suppress(ResourceModifiedError):
            await self._table.delete_entity(encode_key(lease.mailbox_id), _LEASE_ROW, **_if_match(lease.etag))


def _lease_entity(mailbox_id: str, owner: str, expires_at: dt.datetime) -> Entity:
    return {
        "PartitionKey": encode_key(mailbox_id),
        "RowKey": _LEASE_ROW,
        "owner": owner,
        "expires_at": expires_at,
    }


def _lease_from(mailbox_id: str, entity: Entity, etag: str) -> Lease:
    return Lease(mailbox_id=mailbox_id, owner=entity["owner"], expires_at=entity["expires_at"], etag=etag)


# --- subscriptions --------------------------------------------------------------------------

_SUBSCRIPTION_ROW = "subscription"


def _subscription_from(entity: TableEntity) -> SubscriptionRecord:
    return SubscriptionRecord(
        subscription_id=entity["subscription_id"],
        mailbox_id=entity["mailbox_id"],
        resource=entity["resource"],
        client_state_hash=entity["client_state_hash"],
        expiration=_required_utc(entity["expiration"]),
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
        async for entity in _query(self._table, "mailbox_id eq @mailbox", {"mailbox": mailbox_id}):
            yield _subscription_from(entity)

    async def list_expiring(self, before: dt.datetime) -> AsyncIterator[SubscriptionRecord]:
        async for entity in _query(self._table, "expiration lt @before", {"before": before}):
            yield _subscription_from(entity)


# --- parked items ---------------------------------------------------------------------------


def _parked_row(ref: ItemRef) -> str:
    if ref.outlook_id is not None:
        return _outlook_row(ref.kind, ref.outlook_id)
    return _crm_row(str(ref.crm_table), str(ref.crm_id))


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
        first_failed_at=_required_utc(entity["first_failed_at"]),
        last_failed_at=_required_utc(entity["last_failed_at"]),
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
            first_failed_at=_required_utc(current["first_failed_at"]) if current else now,
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
        try:
            if current is None:
                await self._table.create_entity(entity)
            else:
                await self._table.update_entity(entity, mode=UpdateMode.REPLACE, **_if_match(_etag(current)))
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            raise StaleWrite("parked item") from exc
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
        rows = _query(self._table, "PartitionKey eq @pk", {"pk": encode_key(mailbox_id)}, select=["RowKey"])
        return sum([1 async for _ in rows])


# --- audit trail ----------------------------------------------------------------------------

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
        trail in one round trip per 100 records, not one each."""
        if len({record.mailbox_id for record in records}) > 1:
            raise ValueError("append_many takes the records of one mailbox")
        for start in range(0, len(records), _AUDIT_PER_TRANSACTION):
            chunk = records[start : start + _AUDIT_PER_TRANSACTION]
            await self._table.submit_transaction([("create", _audit_entity(record)) for record in chunk])

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
            records.append(AuditRecord.model_validate({**fields, "at": _utc(entity["at"])}))
        return records


# --- opening the store ----------------------------------------------------------------------


def table_service(
    *,
    connection_string: str | None = None,
    account_url: str | None = None,
    credential: AsyncTokenCredential | None = None,
) -> TableServiceClient:
    """The Table service client: a connection string locally, ``account_url`` + credential in Azure."""
    if connection_string:
        return TableServiceClient.from_connection_string(connection_string, **PIPELINE_OPTIONS)
    if account_url and credential:
        return TableServiceClient(endpoint=account_url, credential=credential, **PIPELINE_OPTIONS)
    raise ValueError("storage needs a connection_string, or an account_url and a credential")


async def open_store(
    *,
    connection_string: str | None = None,
    account_url: str | None = None,
    credential: AsyncTokenCredential | None = None,
    prefix: str = "crmsync",
    clock: Clock = utc_now,
) -> Store:
    """Connect (a connection string locally; ``account_url`` + a managed-identity credential in
    Azure), create crmsync's tables if missing, and bundle the repositories."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError("table prefix must be 3-41 letters or digits, starting with a letter")
    service = table_service(
        connection_string=connection_string, account_url=account_url, credential=credential
    )
    try:
        registry, links, sync_state, subscriptions, parked, audit, _tracking = await asyncio.gather(
            *(service.create_table_if_not_exists(prefix + name) for name in TABLES)
        )
    except BaseException:
        await service.close()
        raise
    return Store(
        registry=AzureRegistry(registry, clock),
        links=AzureLinkStore(links, clock),
        sync_state=AzureSyncStateStore(sync_state, clock),
        subscriptions=AzureSubscriptionStore(subscriptions),
        parked=AzureParkedStore(parked, clock),
        audit=AzureAuditTrail(audit),
        closer=service.close,
    )
