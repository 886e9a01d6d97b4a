"""Entity-group transactions without azure-core's generic multipart machinery.

``TableClient.submit_transaction`` encodes the ``$batch`` request and decodes its response with the
standard library's ``email`` package, which was most of the connector's CPU time on an initial sync
(bench.initial_sync --profile). Here the SDK still builds each operation's request (URL, headers,
entity serialisation) and sends the batch through the table client's own pipeline (auth, retries),
while the OData multipart framing, the same format as Dataverse's ``$batch``, is done by
:mod:`shared.crm.batch` ("Performing entity group transactions", learn.microsoft.com/rest/api/
storageservices/performing-entity-group-transactions).

Only success is read here: a transaction that fails writes nothing, so any failure is sent again
through ``submit_transaction``, which raises the SDK's own typed error (``TableTransactionError`` with
the failing operation's index) for the callers to handle as before.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from email.utils import formatdate
from typing import Any

from azure.core.rest import HttpRequest
from azure.data.tables._table_batch import TableBatchOperations
from azure.data.tables.aio import TableClient

from shared.crm.batch import BatchFormatError, BatchRequest, decode_batch, encode_batch

Operation = tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], Mapping[str, Any]]


def _body(request: HttpRequest) -> bytes | None:
    content = request.content
    if content is None:
        return None
    return content.encode("utf-8") if isinstance(content, str) else bytes(content)


async def submit_transaction(table: TableClient, operations: Sequence[Operation]) -> list[dict[str, Any]]:
    """What ``table.submit_transaction(operations)`` returns (each operation's ``etag`` where it has
    one), in one ``$batch`` request; a failure raises what the SDK raises."""
    batch = TableBatchOperations(
        config=table._client._config,  # the SDK builds each operation
        endpoint=f"{table.scheme}://{table._primary_hostname}",
        table_name=table.table_name,
        is_cosmos_endpoint=table._cosmos_endpoint,
    )
    for operation in operations:
        batch.add_operation(operation)
    if not batch.requests:
        return await _sdk(table, operations)
    date = formatdate(time.time(), usegmt=True)
    parts = [
        BatchRequest(
            request.method,
            request.url,
            {**request.headers, "x-ms-date": date, "Date": date},
            _body(request),
        )
        for request in batch.requests
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


async def _sdk(table: TableClient, operations: Sequence[Operation]) -> list[dict[str, Any]]:
    """The SDK's own path: the same transaction again (a failed one wrote nothing), for its typed errors."""
    return [dict(result) for result in await table.submit_transaction(operations)]
