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

    async def apply_batch(
        self, ops: Sequence[Operation], *, atomic: bool = False, caller: str | None
    ) -> list[OperationResult]: ...

    async def read_changes(
        self, table: str, *, select: Sequence[str], link: str | None = None, caller: str | None
    ) -> ChangePage: ...

    async def whoami(self, *, caller: str | None) -> WhoAmI: ...


@runtime_checkable
class CrmQueryPort(CrmPort, Protocol):
    """What the CRM -> Outlook direction needs on top: filter queries and privilege reads."""

    async def query(
        self, table: str, *, where: str, select: Sequence[str], caller: str | None
    ) -> list[dict[str, Any]]:
        """Rows of ``table`` matching an OData ``$filter`` (``where``), as the caller may read them."""
        ...

    async def user_privileges(self, user_id: uuid.UUID, *, caller: str | None) -> frozenset[str]:
        """The privilege names ``user_id`` holds through its security roles."""
        ...


__all__ = [
    "EMAIL_RESOLUTION_ORDER",
    "ChangePage",
    "CrmPort",
    "CrmQueryPort",
    "Delete",
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
