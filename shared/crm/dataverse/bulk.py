"""Plain record writes through Dataverse's bulk message UpsertMultiple instead of ``$batch``.

"Use bulk operation messages" and "Optimize performance for bulk operations"
(learn.microsoft.com/power-apps/developer/data-platform/bulk-operations, .../optimize-performance-
create-update) name CreateMultiple, UpdateMultiple and UpsertMultiple as the fastest way to write
many records of one table; ``bench.dataverse_bulk`` measures UpsertMultiple at about three times the
rate of a ``$batch`` of PATCH upserts. The Web API action (webapi/reference/upsertmultiple):
``POST <set>/Microsoft.Dynamics.CRM.UpsertMultiple`` with ``{"Targets": [...]}``, every target
annotated with ``@odata.type``; a target carrying its primary id is created or updated under it
(the same replay-safe upsert as ``PATCH <set>(<id>)``); the answer is 204 with no body, so the
records' versions (ETags, which the links keep) are read back, a thousand records in one ``$batch``
of ``In`` queries. Two requests still beat one ``$batch`` of a thousand upserts (the bench).

What stays on ``$batch``, and why:

- conditional writes: If-Match / If-None-Match are request headers, one per request, and a bulk
  message has no per-record condition (an update must answer 412 when Dynamics changed the record);
- activity party lists (appointments, emails): the bulk pages document no deep insert of parties;
- deletes: DeleteMultiple is for elastic tables only;
- a record written twice in one call, one another operation binds, or one that binds a record the
  call writes: ``$batch`` runs requests in order, and a bulk message runs before the call's ``$batch``;
- fewer than :data:`MIN_BULK` records of a table: the bulk message and the read of the versions
  are two requests where one ``$batch`` does, and each costs a round trip and counts against the
  service-protection request limit; a few records' framing saves less than that.

On standard tables "if any error occurs, the whole operation fails": a bulk request Dataverse
refuses (a bad record, a missing privilege, a table that does not support the message) is sent
again as the ``$batch`` it replaced, which answers each record on its own. A table answered
"not a bound action" (404) is remembered and not tried again by this client.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from urllib.parse import quote, urlencode

from shared.crm.batch import chunked
from shared.crm.dataverse.batching import post_batch
from shared.crm.dataverse.transport import Transport
from shared.crm.dataverse.wire import Request, record_payload
from shared.crm.errors import CrmError
from shared.crm.port import Operation, OperationResult, RecordRef, Upsert
from shared.crm.tables import table_info

BULK_TABLES = frozenset({"contact", "task"})
"""Tables whose crmsync writes carry no party list, and which support the bulk messages."""
MIN_BULK = 100
"""The fewest records of a table a call sends in bulk. ``bench.dataverse_bulk --records N`` through
the client, on loopback: the two requests break even with one ``$batch`` at about 25 records and
are 1.6 times as fast at 100; each request over a real network costs tens of milliseconds more."""
_IDS_PER_QUERY = 250  # keeps each query's URL near 10 KB, well inside Dataverse's limit
_log = logging.getLogger(__name__)


class BulkWrites:
    """Routes a call's plain upserts to UpsertMultiple; one per client (it remembers refusals)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._unsupported: set[str] = set()

    def groups(self, ops: Sequence[Operation]) -> dict[str, list[int]]:
        """The indexes of ``ops`` to send in bulk, per table (see the module docstring)."""
        addressed = Counter((op.table, op.id) for op in ops)
        bound = {(ref.table, ref.id) for op in ops for ref in _refs(op)}
        eligible: dict[str, list[int]] = {}
        for index, op in enumerate(ops):
            record = (op.table, op.id)
            binds_written = any((ref.table, ref.id) in addressed for ref in _refs(op))
            if self._plain(op) and addressed[record] == 1 and record not in bound and not binds_written:
                eligible.setdefault(op.table, []).append(index)
        return {table: indexes for table, indexes in eligible.items() if len(indexes) >= MIN_BULK}

    def _plain(self, op: Operation) -> bool:
        return (
            isinstance(op, Upsert)
            and op.id is not None
            and op.if_match is None
            and not op.if_none_match
            and not op.parties
            and op.table in BULK_TABLES
            and op.table not in self._unsupported
        )

    async def apply(self, ops: Sequence[Operation], *, caller: str | None) -> dict[int, OperationResult]:
        """The answers of the operations written in bulk, by their index in ``ops``; the others
        (and those of a bulk request Dataverse refused) are left to ``$batch``."""
        answered: dict[int, OperationResult] = {}
        for indexes in self.groups(ops).values():
            for chunk in chunked(indexes):
                upserts = [op for op in (ops[index] for index in chunk) if isinstance(op, Upsert)]
                answered.update(zip(chunk, await self._upsert(upserts, caller=caller) or [], strict=False))
        return answered

    async def _upsert(self, ops: Sequence[Upsert], *, caller: str | None) -> list[OperationResult] | None:
        """Write one table's plain upserts (at most 1000) in one UpsertMultiple request. ``None``:
        Dataverse refused it and wrote none of it, so the caller sends them through ``$batch``. A
        transient failure is raised, as a ``$batch``'s is."""
        table = ops[0].table
        info = table_info(table)
        targets = [
            {
                "@odata.type": f"Microsoft.Dynamics.CRM.{table}",
                info.primary_id: str(op.id),
                **record_payload(table, op.fields),
            }
            for op in ops
        ]
        request = Request(
            "POST", f"{info.entity_set}/Microsoft.Dynamics.CRM.UpsertMultiple", body={"Targets": targets}
        )
        try:
            await self._transport.send(request, caller=caller)
        except CrmError as error:
            if error.retryable:
                raise
            if error.status == 404:
                self._unsupported.add(table)
            return None
        etags = await self._etags(table, [op.id for op in ops if op.id], caller=caller)
        return [
            OperationResult(ok=True, status=204, ref=RecordRef(table, op.id), etag=etags.get(op.id))
            for op in ops
            if op.id
        ]

    async def _etags(
        self, table: str, ids: Sequence[uuid.UUID], *, caller: str | None
    ) -> dict[uuid.UUID, str]:
        """The written records' versions, which the 204 does not carry and the links keep (a record
        at its linked version changed nowhere): one ``$batch`` of ``In`` queries, the ids in its
        body. Unread versions cost nothing but that shortcut, so a failed read is not an error."""
        info = table_info(table)
        reads = []
        for chunk in chunked(ids, _IDS_PER_QUERY):
            values = json.dumps([str(record_id) for record_id in chunk], separators=(",", ":"))
            condition = f"PropertyName='{info.primary_id}',PropertyValues={values}"
            query = {"$select": info.primary_id, "$filter": f"Microsoft.Dynamics.CRM.In({condition})"}
            reads.append(Request("GET", f"{info.entity_set}?{urlencode(query, quote_via=quote, safe='$')}"))
        etags: dict[uuid.UUID, str] = {}
        try:
            parts = await post_batch(self._transport, reads, atomic=False, caller=caller)
        except CrmError as error:
            _log.warning("%d %s records written in bulk: versions unread (%s)", len(ids), table, error.code)
            return etags
        for part in parts:
            for row in (part.json() or {}).get("value", []) if part.status < 400 else []:
                if row.get(info.primary_id) and row.get("@odata.etag"):
                    etags[uuid.UUID(str(row[info.primary_id]))] = str(row["@odata.etag"])
        return etags


def _refs(op: Operation) -> list[RecordRef]:
    """The records an operation binds (its lookups)."""
    fields = op.fields if isinstance(op, Upsert) else {}
    return [value for value in fields.values() if isinstance(value, RecordRef)]
