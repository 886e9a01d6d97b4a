"""The CRM side of a page's items, read before planning, as the mailbox's CRM user sees it.

Every read impersonates the user (``caller=crm_caller_object_id``: "Impersonate another user using
the Web API"), so the user's security roles decide what the planner sees. A page's records are read
in one request (:meth:`~shared.crm.port.CrmPort.get_many`).
"""

from __future__ import annotations

import datetime as dt
import uuid
import weakref
from collections.abc import Mapping, Sequence

from shared.crm.port import CrmPort
from shared.domain.model import ItemKind
from shared.store.records import Mailbox
from shared.sync.fieldmaps import field_map
from shared.sync.fieldmaps.base import ABSENT, parse_utc
from shared.sync.parties import PARTY_COLUMNS
from shared.sync.plan import CrmState
from shared.sync.user_reads import user_reads

_OWNER_COLUMN = "_ownerid_value"
_REGARDING_COLUMN = "_regardingobjectid_value"
# Who wrote the record last, and for whom (CrmState.synced_last).
_WRITER_COLUMNS = ("_modifiedby_value", "_modifiedonbehalfby_value")


def _read_columns(table: str, mapped: Sequence[str]) -> list[str]:
    """The columns a CRM state reads: the mapped ones except party lists, then the owner (last)."""
    parties = PARTY_COLUMNS.get(table, frozenset())
    return [*(column for column in mapped if column not in parties), _OWNER_COLUMN]


def _regarding(row: Mapping[str, object]) -> uuid.UUID | None:
    value = row.get(_REGARDING_COLUMN)
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def _same(value: object, user_id: str | None) -> bool:
    return isinstance(value, str) and user_id is not None and value.lower() == user_id.lower()


def _written_for(mailbox: Mailbox, row: Mapping[str, object] | None) -> bool:
    """Whether an application acting as the mailbox's CRM user wrote the record last."""
    return (
        row is not None
        and _same(row.get(_WRITER_COLUMNS[0]), mailbox.crm_user_id)
        and bool(row.get(_WRITER_COLUMNS[1]))
    )


_APPLICATION_USERS: weakref.WeakKeyDictionary[CrmPort, str] = weakref.WeakKeyDictionary()


async def _application_user(crm: CrmPort) -> str:
    """crmsync's own Dataverse user (``WhoAmI`` as the application), asked once per client."""
    found = _APPLICATION_USERS.get(crm)
    if found is None:
        found = _APPLICATION_USERS[crm] = str((await crm.whoami(caller=None)).user_id)
    return found


def _crm_state(
    mailbox: Mailbox,
    record_id: uuid.UUID,
    row: Mapping[str, object] | None,
    columns: Sequence[str],
    application: str | None = None,
) -> CrmState:
    if row is None:
        return CrmState(record_id, None)
    owner = row.get(_OWNER_COLUMN)
    owned = isinstance(owner, str) and owner.lower() == mailbox.crm_user_id.lower()
    synced = _written_for(mailbox, row) and _same(row.get(_WRITER_COLUMNS[1]), application)
    etag = row.get("@odata.etag")
    values = {column: row.get(column) for column in columns}
    regarding = _regarding(row) if _REGARDING_COLUMN in row else ABSENT
    return CrmState(record_id, values, etag if isinstance(etag, str) else None, owned, regarding, synced)


async def read_crm_states(
    crm: CrmPort, mailbox: Mailbox, kind: ItemKind, record_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, CrmState]:
    """Each record as the mailbox's CRM user sees it (``values=None``: it does not exist)."""
    if not record_ids:
        return {}
    fmap = field_map(kind)
    columns = _read_columns(fmap.table, fmap.columns)
    select = [*columns, *_WRITER_COLUMNS, *([_REGARDING_COLUMN] if kind is ItemKind.EMAIL else [])]
    caller = mailbox.crm_caller_object_id
    if len(record_ids) == 1:
        (record_id,) = record_ids
        rows = {record_id: await crm.get(fmap.table, record_id, select=select, caller=caller)}
    else:
        rows = await crm.get_many(fmap.table, list(dict.fromkeys(record_ids)), select=select, caller=caller)
    written = any(_written_for(mailbox, row) for row in rows.values())
    application = await _application_user(crm) if written else None
    return {
        record_id: _crm_state(mailbox, record_id, rows.get(record_id), columns[:-1], application)
        for record_id in record_ids
    }


def left_window(window: tuple[dt.datetime, dt.datetime], kind: ItemKind, crm: CrmState) -> bool:
    """A removed appointment whose record lies outside the calendar window left the window."""
    if kind is not ItemKind.APPOINTMENT or crm.values is None:
        return False
    start, end = window
    scheduled_start, scheduled_end = (_utc_value(crm.values, c) for c in ("scheduledstart", "scheduledend"))
    return bool(
        (scheduled_end is not None and scheduled_end < start)
        or (scheduled_start is not None and scheduled_start > end)
    )


def _utc_value(values: Mapping[str, object], column: str) -> dt.datetime | None:
    value = values.get(column)
    return parse_utc(value) if isinstance(value, str) else None


async def crm_time_zone(crm: CrmPort, mailbox: Mailbox, kind: ItemKind) -> str | None:
    """The CRM user's time zone, read once per run of appointments (their all-day dates are the
    user's local midnights in the CRM); None for other kinds, or when the user's settings cannot be
    read (then an all-day event's own zone is used). Read as the application, as the user's
    privileges are: a personal option, not a record the user's roles guard."""
    if kind is not ItemKind.APPOINTMENT:
        return None
    return await user_reads(crm).time_zone(uuid.UUID(mailbox.crm_user_id))
