"""Record reads and writes on the Web API: upsert, create, get (one or a ``$batch`` of many), delete,
and the email lookup that resolves activity parties.

webapi/create-entity-web-api, webapi/update-delete-entities-using-web-api ("Upsert a table row"),
webapi/perform-conditional-operations-using-web-api (powerapps-docs, learn.microsoft.com/power-apps
/developer/data-platform/...). The public contract of each is documented on
:class:`~shared.crm.dataverse.client.DataverseClient`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from shared.crm.batch import chunked
from shared.crm.dataverse.batching import post_batch
from shared.crm.dataverse.transport import Transport
from shared.crm.dataverse.wire import (
    RETURN_REPRESENTATION,
    Request,
    delete_request,
    entity_id,
    json_body,
    read_request,
    record_body,
    record_payload,
    response_etag,
    upsert_request,
)
from shared.crm.errors import CrmError, RecordNotFound, caller_not_found, error_from_response
from shared.crm.port import Delete, FieldValue, Party, RecordRef, Upsert, UpsertResult
from shared.crm.tables import table_info


async def upsert(transport: Transport, op: Upsert, *, caller: str | None) -> UpsertResult:
    response = await transport.send(upsert_request(op), caller=caller)
    body = json_body(response.content)
    record_id = op.id or entity_id(response.headers, body, op.table)
    return UpsertResult(
        ref=RecordRef(op.table, record_id) if record_id else None,
        etag=response_etag(response.headers, body),
        created=response.status_code == 201,
    )


async def create(
    transport: Transport,
    table: str,
    fields: Mapping[str, FieldValue],
    *,
    id: uuid.UUID | None,
    parties: Sequence[Party],
    caller: str | None,
) -> RecordRef:
    info = table_info(table)
    body = record_payload(table, fields, parties)
    if id is not None:
        body[info.primary_id] = str(id)
    request = Request(
        "POST",
        f"{info.entity_set}?$select={info.primary_id}",
        headers={"Prefer": RETURN_REPRESENTATION},
        body=body,
    )
    response = await transport.send(request, caller=caller, replay_safe=id is not None)
    record_id = id or entity_id(response.headers, json_body(response.content), table)
    if record_id is None:
        raise CrmError("Dataverse did not return the id of the created record", status=response.status_code)
    return RecordRef(table, record_id)


async def get(
    transport: Transport, table: str, id: uuid.UUID, *, select: Sequence[str] | None, caller: str | None
) -> dict[str, Any] | None:
    try:
        response = await transport.send(read_request(table, id, select), caller=caller)
    except RecordNotFound:
        return None
    return record_body(response.status_code, response.content)


async def get_many(
    transport: Transport,
    table: str,
    ids: Sequence[uuid.UUID],
    *,
    select: Sequence[str] | None,
    caller: str | None,
) -> dict[uuid.UUID, dict[str, Any] | None]:
    unique = list(dict.fromkeys(ids))
    records: dict[uuid.UUID, dict[str, Any] | None] = {}
    for chunk in chunked(unique):
        requests = [read_request(table, record_id, select) for record_id in chunk]
        parts = await post_batch(transport, requests, atomic=False, caller=caller)
        for record_id, part in zip(chunk, parts, strict=True):
            if part.status < 400:
                records[record_id] = record_body(part.status, part.body)
                continue
            error = caller_not_found(error_from_response(part.status, part.body, part.headers), caller)
            if not isinstance(error, RecordNotFound):
                raise error
            records[record_id] = None
    return records


async def delete(
    transport: Transport, table: str, id: uuid.UUID, *, if_match: str | None, caller: str | None
) -> bool:
    try:
        await transport.send(delete_request(Delete(table, id, if_match)), caller=caller)
    except RecordNotFound:
        return False
    return True


async def find_by_email(
    transport: Transport,
    address: str,
    *,
    tables: Sequence[str],
    email_columns: Mapping[str, Sequence[str]],
    caller: str | None,
) -> list[RecordRef]:
    literal = "'" + address.replace("'", "''") + "'"
    searched: list[tuple[str, str]] = []  # (table, primary id column)
    requests: list[Request] = []
    for table in tables:
        info = table_info(table)
        columns = email_columns.get(table, info.email_columns)
        if columns:
            query = {
                "$select": info.primary_id,
                "$filter": " or ".join(f"{c} eq {literal}" for c in columns),
            }
            searched.append((table, info.primary_id))
            requests.append(
                Request("GET", f"{info.entity_set}?{urlencode(query, quote_via=quote, safe='$')}")
            )
    if not requests:
        return []
    parts = await post_batch(transport, requests, atomic=False, caller=caller)
    found: list[RecordRef] = []
    for (table, primary_id), part in zip(searched, parts, strict=True):
        if part.status >= 400:
            raise caller_not_found(error_from_response(part.status, part.body, part.headers), caller)
        found += [
            RecordRef(table, uuid.UUID(row[primary_id])) for row in (part.json() or {}).get("value", [])
        ]
    return found


#: Values per ``$filter`` of :func:`find_where`: keeps each URL far below Dataverse's limits.
FIND_CHUNK = 25


async def find_where(
    transport: Transport,
    table: str,
    columns: Sequence[str],
    values: Sequence[str],
    *,
    select: Sequence[str],
    caller: str | None,
) -> list[dict[str, Any]]:
    """Rows where any of ``columns`` equals any of ``values``: one ``$batch`` of GETs (a request
    per chunk of values), so the values travel in the body, never in a logged URL."""
    info = table_info(table)
    requests: list[Request] = []
    for chunk in chunked(list(dict.fromkeys(values)), FIND_CHUNK):
        literals = ["'" + value.replace("'", "''") + "'" for value in chunk]
        condition = " or ".join(f"{column} eq {literal}" for column in columns for literal in literals)
        query = {"$select": ",".join(select), "$filter": condition}
        requests.append(Request("GET", f"{info.entity_set}?{urlencode(query, quote_via=quote, safe='$')}"))
    if not requests:
        return []
    rows: list[dict[str, Any]] = []
    for part in await post_batch(transport, requests, atomic=False, caller=caller):
        if part.status >= 400:
            raise caller_not_found(error_from_response(part.status, part.body, part.headers), caller)
        rows += (part.json() or {}).get("value", [])
    return rows
