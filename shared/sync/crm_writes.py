"""The Web API operations of planned CRM writes: upserts with resolved party lists, deletes and
regarding binds. Creates are upserts under the deterministic id, so a replay updates instead of
duplicating; an update is conditional on the ETag the planner read (or ``*``: never a create).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping

from shared.crm.port import Delete, FieldValue, Operation, RecordRef, Upsert
from shared.crm.tables import bind_annotation
from shared.sync.fieldmaps import CrmValue
from shared.sync.parties import PARTY_COLUMNS, PartyResolver
from shared.sync.plan import Action, CreateInCrm, DeleteInCrm, SetRegarding, UpdateCrm

_EMAIL_TABLE = "email"


class CrmOperations:
    """Builds one run's CRM operations (parties resolved through the run's resolver)."""

    def __init__(self, resolver: PartyResolver) -> None:
        self._resolver = resolver

    async def of(self, action: Action, projection: Mapping[str, CrmValue]) -> list[Operation]:
        """The Web API operations of one action (none for actions that do not write the CRM).
        ``projection``: the Outlook item's full CRM projection (an update of one party column
        sends the others too)."""
        if isinstance(action, CreateInCrm):
            ops: list[Operation] = [await self._upsert(action.table, action.record_id, action.values)]
            if action.then_update:
                later = await self._upsert(action.table, action.record_id, action.then_update)
                ops.append(dataclasses.replace(later, if_match="*"))
            return ops
        if isinstance(action, UpdateCrm):
            # A party list is replaced whole: send every party column, the changed ones on top.
            values = dict(action.values)
            parties = PARTY_COLUMNS.get(action.table, frozenset())
            if parties & set(values):
                values = {column: projection[column] for column in parties if column in projection} | values
            op = await self._upsert(action.table, action.record_id, values)
            return [dataclasses.replace(op, if_match=action.if_match or "*")]
        if isinstance(action, DeleteInCrm):
            return [Delete(action.table, action.record_id, if_match=action.if_match)]
        if isinstance(action, SetRegarding):
            return [_regarding_write(action)]
        return []

    async def _upsert(self, table: str, record_id: uuid.UUID, values: Mapping[str, CrmValue]) -> Upsert:
        party_columns = PARTY_COLUMNS.get(table, frozenset())
        fields: dict[str, FieldValue] = {}
        for column, value in values.items():
            if column in party_columns:
                continue
            if isinstance(value, tuple):
                raise ValueError(f"{table}.{column}: a party list outside the table's party columns")
            fields[column] = value
        present = frozenset(column for column in party_columns if column in values)
        parties = await self._resolver.parties(values, present)
        return Upsert(table, fields, id=record_id, parties=parties)


def _regarding_write(action: SetRegarding) -> Upsert:
    """Set the email's regarding, or clear it with a null bind of the previous target's navigation."""
    fields: dict[str, FieldValue]
    if action.regarding is not None:
        fields = {"regardingobjectid": RecordRef(action.regarding.table, action.regarding.id)}
    else:
        if action.previous is None:
            raise ValueError("clearing a regarding needs the record it pointed to")
        navigation, _ = bind_annotation(
            _EMAIL_TABLE, "regardingobjectid", action.previous.table, action.record_id
        )
        fields = {navigation: None}  # a null bind clears the lookup
    return Upsert(_EMAIL_TABLE, fields, id=action.record_id, if_match="*")
