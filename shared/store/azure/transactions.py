"""Entity-group transactions without azure-core's generic multipart machinery.

``TableClient.submit_transaction`` encodes the ``$batch`` request and decodes its response with the
standard library's ``email`` package, which was most of the connector's CPU time on an initial sync
(bench.initial_sync --profile). Here the batch goes through the table client's own pipeline (auth,
retries), while the OData multipart framing, the same format as Dataverse's ``$batch``, is done by
:mod:`shared.crm.batch` ("Performing entity group transactions", learn.microsoft.com/rest/api/
storageservices/performing-entity-group-transactions). Each operation's request (URL, headers, the
entity's JSON with its ``@odata.type`` annotations) is built here as the SDK builds it - the SDK's
per-operation request objects were the next largest cost - for the operations and property types the
store writes (str, bool, int32, float, aware datetime, bytes, UUID); anything else (an
``EntityProperty``, a naive datetime, a round-tripped value) is left to the SDK's own builder.

Only success is read here: a transaction that fails writes nothing, so any failure is sent again
through ``submit_transaction``, which raises the SDK's own typed error (``TableTransactionError`` with
the failing operation's index) for the callers to handle as before.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import math
import time
import uuid
from collections.abc import Awaitable, Coroutine, Iterable, Mapping, Sequence
from email.utils import formatdate
from typing import Any, TypeVar
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.rest import HttpRequest
from azure.data.tables import UpdateMode
from azure.data.tables._table_batch import TableBatchOperations
from azure.data.tables.aio import TableClient

from shared.crm.batch import BatchFormatError, BatchRequest, decode_batch, encode_batch

Operation = tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], Mapping[str, Any]]
T = TypeVar("T")

#: Independent transactions of one write (a page's links, its audit records) in flight at once: the
#: next is encoded while the service commits the last, and the target of one partition (2,000
#: entities per second) is still far away.
TRANSACTIONS_AT_ONCE = 4


async def at_most(limit: int, steps: Iterable[Awaitable[T]]) -> list[T]:
    """Await ``steps``, ``limit`` at a time, results in order. The first failure cancels the rest
    and is raised as itself (not as an exception group); a cancelled transaction may or may not have
    committed, as with a crash, and its writer's next run finds out."""
    gate = asyncio.Semaphore(limit)

    async def one(step: Awaitable[T]) -> T:
        try:
            async with gate:
                return await step
        finally:
            if isinstance(step, Coroutine):
                step.close()  # one cancelled before it started is not left "never awaited"

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(step)) for step in steps]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def _body(request: HttpRequest) -> bytes | None:
    content = request.content
    if content is None:
        return None
    return content.encode("utf-8") if isinstance(content, str) else bytes(content)


async def submit_transaction(table: TableClient, operations: Sequence[Operation]) -> list[dict[str, Any]]:
    """What ``table.submit_transaction(operations)`` returns (each operation's ``etag`` where it has
    one), in one ``$batch`` request; a failure raises what the SDK raises."""
    requests = operation_requests(table, operations)
    if not requests:
        return await _sdk(table, operations)
    date = formatdate(time.time(), usegmt=True)
    parts = [
        BatchRequest(
            request.method, request.url, {**request.headers, "x-ms-date": date, "Date": date}, request.body
        )
        for request in requests
    ]
    content_type, content = encode_batch(parts, atomic=True)
    request = HttpRequest(
        "POST",
        f"{table.scheme}://{table._primary_hostname}/$batch",
        headers={
            "x-ms-version": table.api_version,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Content-Type": content_type,
            "Accept": "application/json",
        },
        content=content,
    )
    response = await table._client.send_request(request, stream=True)  # multipart: no content decoding
    await response.read()
    if response.status_code != 202:
        return await _sdk(table, operations)
    try:
        answers = decode_batch(response.headers.get("content-type", ""), response.content)
    except BatchFormatError:
        return await _sdk(table, operations)
    if len(answers) != len(parts) or any(not 200 <= answer.status < 300 for answer in answers):
        return await _sdk(table, operations)
    return [{"etag": answer.headers["etag"]} if "etag" in answer.headers else {} for answer in answers]


def operation_requests(table: TableClient, operations: Sequence[Operation]) -> list[BatchRequest]:
    """Each operation's request as the SDK's ``TableBatchOperations`` builds it (method, URL, headers,
    body), built here when every operation is one :func:`_request` knows, else by the SDK."""
    base = f"{table.scheme}://{table._primary_hostname}/{table.table_name}"
    version = table._client._config.version
    partitions = {str(operation[1].get("PartitionKey")) for operation in operations}
    if len(partitions) == 1 and not table._cosmos_endpoint:  # Cosmos DB takes merges otherwise
        built = [_request(base, version, operation) for operation in operations]
        if all(request is not None for request in built):
            return [request for request in built if request is not None]
    batch = TableBatchOperations(
        config=table._client._config,
        endpoint=f"{table.scheme}://{table._primary_hostname}",
        table_name=table.table_name,
        is_cosmos_endpoint=table._cosmos_endpoint,
    )
    for operation in operations:
        batch.add_operation(operation)  # raises the SDK's errors for what it refuses
    return [
        BatchRequest(request.method, request.url, dict(request.headers), _body(request))
        for request in batch.requests
    ]


_OPTIONS = frozenset(("mode", "etag", "match_condition"))
_INT32 = range(-(2**31), 2**31)


def _request(base: str, version: str, operation: Operation) -> BatchRequest | None:
    """One operation's request, or ``None`` if it is not one this builder knows."""
    kind, entity = operation[0], operation[1]
    options: Mapping[str, Any] = operation[2] if len(operation) == 3 else {}
    if not isinstance(kind, str) or not options.keys() <= _OPTIONS:
        return None
    kind = kind.lower()  # a TransactionOperation is a str enum
    partition, row = entity.get("PartitionKey"), entity.get("RowKey")
    if not isinstance(partition, str) or not isinstance(row, str):
        return None
    headers = {"x-ms-version": version, "DataServiceVersion": "3.0"}
    if kind == "create" and not options:
        return _with_body("POST", base, headers, "application/json;odata=minimalmetadata", entity)
    url = f"{base}(PartitionKey='{_key(partition)}',RowKey='{_key(row)}')"
    mode = options.get("mode", UpdateMode.MERGE)
    method = {UpdateMode.REPLACE: "PUT", UpdateMode.MERGE: "PATCH"}.get(mode)
    if kind == "upsert" and method is not None and options.keys() <= {"mode"}:
        return _with_body(method, url, headers, "application/json", entity)
    match = _if_match(options)
    if match is None:
        return None
    if kind == "update" and method is not None:
        return _with_body(method, url, headers | {"If-Match": match}, "application/json", entity)
    if kind == "delete" and "mode" not in options:
        headers |= {"Accept": "application/json;odata=minimalmetadata", "If-Match": match}
        return BatchRequest("DELETE", url, headers, None)
    return None


def _key(key: str) -> str:
    return quote(key.replace("'", "''"), safe="")


def _if_match(options: Mapping[str, Any]) -> str | None:
    """The If-Match of an update or delete: the etag if it must be unchanged, ``*`` otherwise."""
    etag, condition = options.get("etag"), options.get("match_condition")
    if condition == MatchConditions.IfNotModified and isinstance(etag, str) and etag:
        return etag
    if condition in (None, MatchConditions.Unconditionally) and etag is None:
        return "*"
    return None


def _with_body(
    method: str, url: str, headers: dict[str, str], accept: str, entity: Mapping[str, Any]
) -> BatchRequest | None:
    properties = entity_json(entity)
    if properties is None:
        return None
    body = json.dumps(properties).encode("ascii")
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}
    return BatchRequest(method, url, headers | {"Accept": accept}, body)


def entity_json(entity: Mapping[str, Any]) -> dict[str, Any] | None:
    """The entity's JSON as the SDK's serializer writes it (a string, double, date, binary or GUID
    property with its ``@odata.type``), or ``None`` for a value of another type."""
    properties: dict[str, Any] = {}
    for name, value in entity.items():
        kind = type(value)
        if value is None:
            continue
        if kind is str:
            properties[name] = value
            properties[f"{name}@odata.type"] = "Edm.String"
        elif kind is bool or (kind is int and value in _INT32):
            properties[name] = value  # JSON's own types: no annotation
        elif kind is float:
            properties[name] = _double(value)
            properties[f"{name}@odata.type"] = "Edm.Double"
        elif kind is dt.datetime and value.tzinfo is not None:
            properties[name] = value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            properties[f"{name}@odata.type"] = "Edm.DateTime"
        elif kind is bytes:
            properties[name] = base64.b64encode(value).decode("ascii")
            properties[f"{name}@odata.type"] = "Edm.Binary"
        elif kind is uuid.UUID:
            properties[name] = str(value)
            properties[f"{name}@odata.type"] = "Edm.Guid"
        else:
            return None
    return properties


def _double(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


async def _sdk(table: TableClient, operations: Sequence[Operation]) -> list[dict[str, Any]]:
    """The SDK's own path: the same transaction again (a failed one wrote nothing), for its typed errors."""
    return [dict(result) for result in await table.submit_transaction(operations)]
