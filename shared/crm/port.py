"""The CRM port: what the sync engine needs from a CRM, in CRM-neutral terms.

Every call is made *on behalf of a user* (``caller`` = the user's Entra object id, sent by the
Dataverse adapter as ``CallerObjectId``), so security roles and column security apply exactly as
they would for that user; ``caller=None`` means the application user itself and is only for
onboarding and org-wide change tracking. ``caller`` is keyword-only and has no default on purpose:
forgetting impersonation must be a type error, not a privilege escalation.

Fields are logical column names -> values; lookups are :class:`RecordRef` values (the adapter turns
them into ``@odata.bind``); activity parties are :class:`Party` values.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from shared.crm.errors import CrmError
from shared.domain.model import Participation


@dataclass(frozen=True, slots=True)
class RecordRef:
    """A CRM record by table logical name and primary id."""

    table: str
    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Party:
    """One activity party: a resolved record (``ref``), an unresolved address, or both.

    Dataverse keeps ``addressused`` next to the resolved party, so the address the mail was sent to
    survives even when it resolves to a contact.
    """

    participation: Participation
    ref: RecordRef | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        if self.ref is None and not self.address:
            raise ValueError("a party needs a record reference or an email address")


FieldValue = str | int | float | bool | None | dt.datetime | dt.date | uuid.UUID | RecordRef
KeyValue = str | int


@dataclass(frozen=True, slots=True)
class Upsert:
    """Create-or-update one record, addressed by primary ``id`` or by an alternate ``key``.

    ``if_match``: an etag (update only if unchanged) or ``"*"`` (update only, never create).
    ``if_none_match``: create only, never update.
    ``parties`` replaces the activity's party list (email, appointment).
    """

    table: str
    fields: Mapping[str, FieldValue]
    id: uuid.UUID | None = None
    key: Mapping[str, KeyValue] | None = None
    parties: tuple[Party, ...] = ()
    if_match: str | None = None
    if_none_match: bool = False

    def __post_init__(self) -> None:
        if (self.id is None) == (self.key is None):
            raise ValueError("an upsert is addressed by exactly one of id or alternate key")
        if self.if_match is not None and self.if_none_match:
            raise ValueError("If-Match and If-None-Match exclude each other")


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete one record; a record that is already gone counts as deleted."""

    table: str
    id: uuid.UUID
    if_match: str | None = None


Operation = Upsert | Delete


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What an upsert did: the record, its new etag, and whether it was created."""

    ref: RecordRef | None
    etag: str | None
    created: bool


@dataclass(frozen=True, slots=True)
class OperationResult:
    """One batch operation's outcome; ``error`` is set when ``ok`` is false."""

    ok: bool
    status: int
    ref: RecordRef | None = None
    etag: str | None = None
    created: bool = False
    error: CrmError | None = None


@dataclass(frozen=True, slots=True)
class ChangePage:
    """One page of a table's change-tracking stream.

    Exactly one of ``next_link`` (more pages now) and ``delta_link`` (store it; ask again later) is
    set. Links are opaque: hand them back to :meth:`CrmPort.read_changes` unchanged.
    """

    table: str
    changed: tuple[Mapping[str, Any], ...] = ()
    deleted: tuple[uuid.UUID, ...] = ()
    next_link: str | None = None
    delta_link: str | None = None


@dataclass(frozen=True, slots=True)
class WhoAmI:
    """The Dataverse user a call runs as (``WhoAmI`` function)."""

    user_id: uuid.UUID
    business_unit_id: uuid.UUID
    organization_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class FieldSyncMapping:
    """One row of the organization's field synchronization settings (``syncattributemapping``).

    ``direction``: 0 none, 1 to Exchange (Outlook), 2 to Dynamics, 3 both ("What fields can be
    synchronized with Outlook?", Dynamics 365 admin guide). ``columns``: the CRM columns the row
    governs - its own column, or for an aggregate (``iscomputed``: Appointment Time, Full Name,
    the addresses) the columns listed in ``computedproperties``. A row whose direction is still its
    ``default_direction`` is no organization choice.
    """

    table: str
    column: str
    direction: int
    columns: tuple[str, ...] = ()
    default_direction: int | None = None  # ``defaultsyncdirection``: Dynamics' own default


@dataclass(frozen=True, slots=True)
class ColumnPermission:
    """What a user may do with one secured column (field security profiles; "Column-level security")."""

    read: bool = False
    update: bool = False
    create: bool = False


@dataclass(frozen=True, slots=True)
class ColumnSecurity:
    """The secured columns of some tables and what one user may do with each of them.

    A secured column the user has no permission row for is ``ColumnPermission()`` (nothing): it reads
    as null for the user and writing it is refused. Unsecured columns are not listed.
    """

    permissions: Mapping[tuple[str, str], ColumnPermission]

    def of(self, table: str) -> dict[str, ColumnPermission]:
        return {column: grant for (name, column), grant in self.permissions.items() if name == table}


EMAIL_RESOLUTION_ORDER = ("systemuser", "contact", "account", "lead")
"""Dynamics' party resolution order: users first, then contacts, accounts, leads."""


@runtime_checkable
class CrmPort(Protocol):
    """What the engine calls. Implemented by :class:`shared.crm.dataverse.DataverseClient`."""

    async def upsert(self, op: Upsert, *, caller: str | None) -> UpsertResult: ...

    async def create(
        self,
        table: str,
        fields: Mapping[str, FieldValue],
        *,
        id: uuid.UUID | None = None,
        parties: Sequence[Party] = (),
        caller: str | None,
    ) -> RecordRef: ...

    async def get(
        self, table: str, id: uuid.UUID, *, select: Sequence[str] | None = None, caller: str | None
    ) -> dict[str, Any] | None: ...

    async def get_many(
        self, table: str, ids: Sequence[uuid.UUID], *, select: Sequence[str] | None = None, caller: str | None
    ) -> dict[uuid.UUID, dict[str, Any] | None]:
        """Each id -> what :meth:`get` returns for it (``None``: no such record), in as few requests as
        the CRM allows; a read failure other than "does not exist" raises its typed error."""
        ...

    async def delete(
        self, table: str, id: uuid.UUID, *, if_match: str | None = None, caller: str | None
    ) -> bool: ...

    async def find_by_email(
        self, address: str, *, tables: Sequence[str] = EMAIL_RESOLUTION_ORDER, caller: str | None
    ) -> list[RecordRef]: ...

    async def find_where(
        self,
        table: str,
        columns: Sequence[str],
        values: Sequence[str],
        *,
        select: Sequence[str],
        caller: str | None,
    ) -> list[dict[str, Any]]:
        """Rows of ``table`` where any of ``columns`` equals any of ``values`` (string columns), as
        the caller may read them, in as few requests as the CRM allows."""
        ...

    async def series_instances(
        self, series_id: uuid.UUID, *, select: Sequence[str], caller: str | None
    ) -> list[dict[str, Any]]:
        """The ``appointment`` rows of a recurring series (``seriesid`` = the
        ``recurringappointmentmaster`` id: "Create a recurring appointment series, instance, or
        exception"), as the caller may read them, with their ``@odata.etag``."""
        ...

    async def party_addresses(
        self, activity_ids: Sequence[uuid.UUID], *, caller: str | None
    ) -> dict[uuid.UUID, frozenset[tuple[int, str]]]:
        """Each activity's parties as (``participationtypemask``, lower-cased ``addressused``), every
        asked id a key (no rows: empty): the party list is rows of ``activityparty``, not a column a
        record read returns. As few requests as the CRM allows, not one per activity."""
        ...

    async def apply_batch(
        self, ops: Sequence[Operation], *, atomic: bool = False, caller: str | None
    ) -> list[OperationResult]: ...

    async def read_changes(
        self, table: str, *, select: Sequence[str], link: str | None = None, caller: str | None
    ) -> ChangePage: ...

    async def whoami(self, *, caller: str | None) -> WhoAmI: ...

    async def field_sync_mappings(
        self, tables: Sequence[str], *, caller: str | None
    ) -> list[FieldSyncMapping]:
        """The organization's field synchronization directions for ``tables`` (read as the application)."""
        ...

    async def column_security(
        self, user_id: uuid.UUID, tables: Sequence[str], *, caller: str | None
    ) -> ColumnSecurity:
        """The secured columns of ``tables`` and what ``user_id`` may do with each (as the application)."""

    async def user_time_zone(self, user_id: uuid.UUID, *, caller: str | None) -> str | None:
        """The user's time zone (``usersettings.timezonecode``) as a Windows zone name, or None."""
        ...


@runtime_checkable
class CrmQueryPort(CrmPort, Protocol):
    """What the CRM -> Outlook direction needs on top: filter queries and privilege reads."""

    async def query(
        self, table: str, *, where: str, select: Sequence[str], caller: str | None, expand: str | None = None
    ) -> list[dict[str, Any]]:
        """Rows of ``table`` matching an OData ``$filter`` (``where``), as the caller may read them;
        ``expand``: an OData ``$expand`` (related rows in the same request)."""
        ...

    async def fetch(self, table: str, *, fetch_xml: str, caller: str | None) -> list[dict[str, Any]]:
        """Rows of a FetchXML query over ``table``, as the caller may read them (``eq-userid`` is the
        caller)."""
        ...

    async def user_privileges(self, user_id: uuid.UUID, *, caller: str | None) -> frozenset[str]:
        """The privilege names ``user_id`` holds through its security roles."""
        ...


__all__ = [
    "EMAIL_RESOLUTION_ORDER",
    "ChangePage",
    "ColumnPermission",
    "ColumnSecurity",
    "CrmPort",
    "CrmQueryPort",
    "Delete",
    "FieldSyncMapping",
    "FieldValue",
    "KeyValue",
    "Operation",
    "OperationResult",
    "Party",
    "RecordRef",
    "Upsert",
    "UpsertResult",
    "WhoAmI",
]
