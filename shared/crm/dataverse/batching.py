"""Operations and reads through ``$batch`` (the multipart wire format is :mod:`shared.crm.batch`).

webapi/execute-batch-operations-using-web-api: ``$batch``, change sets,
``Prefer: odata.continue-on-error``; at most 1000 requests each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from shared.crm.batch import (
    MAX_BATCH_OPERATIONS,
    BatchRequest,
    BatchResponse,
    chunked,
    decode_batch,
    encode_batch,
)
from shared.crm.dataverse.transport import Transport
from shared.crm.dataverse.wire import Request, entity_id, json_body, operation_request, response_etag
from shared.crm.errors import CrmError, RecordNotFound, error_from_response
from shared.crm.port import Delete, Operation, OperationResult, RecordRef

if TYPE_CHECKING:
    from shared.crm.dataverse.bulk import BulkWrites


async def post_batch(
    transport: Transport, requests: Sequence[Request], *, atomic: bool, caller: str | None
) -> list[BatchResponse]:
    """POST one ``$batch``; independent requests run on after a failure (continue-on-error), so each
    of them is answered (a failed change set is answered by its one failing response)."""
    parts = [
        BatchRequest(request.method, transport.url(request.path), request.headers, request.body)
        for request in requests
    ]
    content = encode_batch(parts, atomic=atomic)
    headers = {} if atomic else {"Prefer": "odata.continue-on-error"}
    response = await transport.send(
        Request("POST", "$batch", headers=headers), caller=caller, content=content
    )
    answers = decode_batch(response.headers.get("content-type", ""), response.content)
    if not atomic and len(answers) != len(requests):
        raise CrmError(f"Dataverse answered {len(answers)} of {len(requests)} batch requests", status=200)
    return answers


def _operation_result(op: Operation, response: BatchResponse) -> OperationResult:
    body = json_body(response.body)
    if response.status < 400:
        record_id = op.id or entity_id(response.headers, body, op.table)
        return OperationResult(
            ok=True,
            status=response.status,
            ref=RecordRef(op.table, record_id) if record_id else None,
            etag=response_etag(response.headers, body),
            created=response.status == 201,
        )
    error = error_from_response(response.status, response.body, response.headers)
    if isinstance(op, Delete) and isinstance(error, RecordNotFound):
        return OperationResult(ok=True, status=response.status, ref=RecordRef(op.table, op.id))
    return OperationResult(ok=False, status=response.status, error=error)


async def _run_batch(
    transport: Transport, ops: Sequence[Operation], *, atomic: bool, caller: str | None
) -> list[OperationResult]:
    parts = await post_batch(transport, [operation_request(op) for op in ops], atomic=atomic, caller=caller)
    if len(parts) == len(ops):
        return [_operation_result(op, part) for op, part in zip(ops, parts, strict=True)]
    if atomic and len(parts) == 1 and parts[0].status >= 400:
        # A failed change set is answered by the one failing response; everything rolled back.
        error = error_from_response(parts[0].status, parts[0].body, parts[0].headers)
        return [OperationResult(ok=False, status=parts[0].status, error=error) for _ in ops]
    raise CrmError(f"Dataverse answered {len(parts)} of {len(ops)} batch operations", status=200)


async def apply_batch(
    transport: Transport,
    ops: Sequence[Operation],
    *,
    atomic: bool,
    caller: str | None,
    bulk: BulkWrites | None = None,
) -> list[OperationResult]:
    """:meth:`DataverseClient.apply_batch <shared.crm.dataverse.client.DataverseClient.apply_batch>`:
    with ``bulk``, the plain upserts it picks go first, in UpsertMultiple requests; the rest, and
    any bulk request Dataverse refused, in ``$batch`` requests."""
    if atomic and len(ops) > MAX_BATCH_OPERATIONS:
        raise ValueError("an atomic batch (one change set) holds at most 1000 operations")
    answered = await bulk.apply(ops, caller=caller) if bulk is not None and not atomic else {}
    rest = [index for index in range(len(ops)) if index not in answered]
    for chunk in chunked(rest):
        batch = await _run_batch(transport, [ops[i] for i in chunk], atomic=atomic, caller=caller)
        answered.update(zip(chunk, batch, strict=True))
    return [answered[index] for index in range(len(ops))]
