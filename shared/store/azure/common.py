"""What every Table Storage repository shares: ETag conditions, UTC timestamps, paged range queries,
and the row keys of an item's Outlook side and CRM side (the link rows and the parked rows use them).

Atomicity comes from entity-group transactions (all rows in one partition, all-or-nothing:
learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions) and from
optimistic concurrency: ``create`` fails if the row exists, ``update``/``delete`` carry the
ETag read (``If-Match``) and fail with 412 if someone wrote in between
(learn.microsoft.com/azure/storage/blobs/concurrency-manage, "Optimistic concurrency").
Retrying transient failures is the azure-core pipeline's job (one retry layer); 409/412 are
never retried, they become the typed errors of :mod:`shared.store.errors`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity, UpdateMode
from azure.data.tables.aio import TableClient

from shared.domain.model import ItemKind
from shared.store.errors import StaleWrite
from shared.store.keys import encode_key, row_key

Clock = Callable[[], dt.datetime]
Entity = dict[str, Any]


async def put_row(table: TableClient, entity: Entity, etag: str | None, what: str) -> str:
    """Insert the row (``etag`` None: none was read) or replace it If-Match ``etag``: its new ETag;
    :class:`~shared.store.errors.StaleWrite` naming ``what`` if another writer came first."""
    try:
        if etag is None:
            result = await table.create_entity(entity)
        else:
            result = await table.update_entity(entity, mode=UpdateMode.REPLACE, **if_match(etag))
    except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
        raise StaleWrite(what) from exc
    return str(result["etag"])


def if_match(etag: str) -> dict[str, Any]:
    return {"etag": etag, "match_condition": MatchConditions.IfNotModified}


def entity_etag(entity: TableEntity) -> str:
    return str(entity.metadata["etag"])


def without_nulls(**properties: Any) -> Entity:
    """Table Storage has no null: an absent property is how "no value" is stored."""
    return {name: value for name, value in properties.items() if value is not None}


def as_utc(value: Any) -> dt.datetime | None:
    """The SDK's ``TablesEntityDatetime`` as a plain aware datetime (``None`` stays ``None``)."""
    if value is None:
        return None
    moment: dt.datetime = value
    return dt.datetime(
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second, moment.microsecond,
        tzinfo=dt.UTC,
    )  # fmt: skip


def required_utc(value: Any) -> dt.datetime:
    moment = as_utc(value)
    if moment is None:
        raise ValueError("stored row lacks a required timestamp")
    return moment


def range_filter(extra: str = "") -> str:
    return "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high" + extra


# The most rows Table Storage returns per query page (learn.microsoft.com/rest/api/storageservices
# /query-timeout-and-pagination), so loading 10,000 links takes ten round trips.
PAGE_SIZE = 1000


async def query(
    table: TableClient, query_filter: str, parameters: dict[str, Any], select: list[str] | None = None
) -> AsyncIterator[TableEntity]:
    entities = table.query_entities(
        query_filter, parameters=parameters, select=select, results_per_page=PAGE_SIZE
    )
    async for entity in entities:
        yield entity


OUTLOOK_SIDE = "o"
CRM_SIDE = "c"


def outlook_row_key(kind: ItemKind, outlook_id: str) -> str:
    return row_key(OUTLOOK_SIDE, kind.value, encode_key(outlook_id))


def crm_row_key(crm_table: str, crm_id: str) -> str:
    return row_key(CRM_SIDE, encode_key(crm_table), encode_key(crm_id))
