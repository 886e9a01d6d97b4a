"""The applier: executes one item's planned actions against Dataverse, Outlook and the link map.

The planner (:mod:`shared.sync.planner`) is pure; this is the I/O half, in the order docs/ARCHITECTURE.md
fixes:
CRM writes first, then Outlook writes (the CRM id stamp), then the link rows - so a crash anywhere
re-runs the plan and every step replays harmlessly: creates are upserts under the deterministic id
(``PATCH /<set>(<id>)`` creates or updates: "Use Upsert to Create or Update a record",
learn.microsoft.com/power-apps/developer/data-platform/use-upsert-insert-update-record), a delete
of a gone record is done, and link writes overwrite what a crashed run left.

Every CRM call impersonates the mailbox's CRM user (``caller=crm_caller_object_id``: "Impersonate
another user using the Web API", learn.microsoft.com/power-apps/developer/data-platform/webapi/
impersonate-another-user-web-api), so the user's security roles decide what may be written. A create
whose columns include ones the contract forbids on create (appointment ``statecode``/``statuscode``)
goes as one change set - create, then update - so it is all or nothing ("Execute batch operations
using the Web API", .../webapi/execute-batch-operations-using-web-api).

Activity parties: the field maps' party columns (``from``, ``to``, ``organizer``...) are not Web API
columns; they become the activity's party list. Addresses resolve to a systemuser, contact, account
or lead, in that order (Dynamics' resolution order), else stay an unresolved ``addressused``; the
resolver caches per run. Party lists are write-only here: :meth:`Applier.read_crm_state` reports
them as null, which the merge treats as "the CRM has no value" and never as an Outlook change.

Audit: one record per CRM write, with hashed ids only (never bodies or addresses).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shared.crm.errors import CrmError
from shared.crm.limits import Fitted
from shared.crm.port import CrmPort, FieldValue, Party, RecordRef, Upsert
from shared.domain.model import Appointment, Contact, Email, ItemKind, OutlookItem, Task
from shared.outlook.writers import STAMPABLE_KINDS, OutlookWriter
from shared.store.errors import LinkAlreadyExists
from shared.store.ports import AuditTrail, LinkStore
from shared.store.records import AuditAction, AuditRecord, Mailbox
from shared.store.records import Link as StoredLink
from shared.store.synced_fields import SyncedValue
from shared.sync.concurrency import bounded_gather
from shared.sync.fieldmaps import CrmValue, PartySpec, field_map
from shared.sync.merge import FieldBase
from shared.sync.planner import (
    Action,
    Conflict,
    CreateInCrm,
    CreateInOutlook,
    CrmState,
    DeleteInCrm,
    DeleteInOutlook,
    DropLink,
    Link,
    Skip,
    StampOutlook,
    UnlinkOnly,
    UpdateCrm,
    UpdateOutlook,
    WriteLink,
)

logger = logging.getLogger(__name__)

ACTOR = "sync.outlook_to_crm"
NeutralContent = Contact | Appointment | Task | Email

# Field-map columns that are activity parties, per table (see the module docstring).
PARTY_COLUMNS: Mapping[str, frozenset[str]] = {
    "email": frozenset({"from", "to", "cc", "bcc"}),
    "appointment": frozenset({"organizer", "requiredattendees", "optionalattendees"}),
}
_OWNER_COLUMN = "_ownerid_value"
# The change key a stamp leaves is not recorded: the PATCH answer's key would also cover a user's
# edit made between the delta read and the stamp, hiding it. The stamp's echo is then recognised by
# its content hash (a link refresh, no CRM write).
_UNKNOWN_CHANGE_KEY = None
_OWNED_KEY = "@owned_by_user"  # kept beside the per-column bases in the link row's synced fields


# --- link rows <-> the planner's links ----------------------------------------------------------


def to_stored_link(mailbox_id: str, kind: ItemKind, link: Link) -> StoredLink:
    """The link row for a planner link (bases as ``[outlook, crm]`` fingerprint pairs)."""
    synced: dict[str, SyncedValue] = {_OWNED_KEY: link.owned_by_user}
    for column, base in link.synced_fields.items():
        synced[column] = [base.outlook, base.crm]
    return StoredLink(
        mailbox_id=mailbox_id,
        kind=kind,
        outlook_id=link.outlook_id,
        crm_table=field_map(kind).table,
        crm_id=str(link.crm_id),
        outlook_change_key=link.outlook_change_key,
        crm_etag=link.crm_etag,
        outlook_hash=link.outlook_hash,
        crm_hash=link.crm_hash,
        synced_fields=synced,
    )


def from_stored_link(row: StoredLink) -> Link:
    """The planner's view of a link row."""
    bases: dict[str, FieldBase] = {}
    for column, value in row.synced_fields.items():
        if isinstance(value, list) and len(value) == 2:
            bases[column] = FieldBase(str(value[0]), str(value[1]))
    return Link(
        outlook_id=row.outlook_id,
        crm_id=uuid.UUID(row.crm_id),
        outlook_change_key=row.outlook_change_key,
        crm_etag=row.crm_etag,
        outlook_hash=row.outlook_hash or "",
        crm_hash=row.crm_hash or "",
        synced_fields=bases,
        owned_by_user=row.synced_fields.get(_OWNED_KEY) is True,
    )


def _audit_record(
    mailbox_id: str,
    kind: ItemKind,
    action: AuditAction,
    crm_id: uuid.UUID | None,
    outlook_id: str | None = None,
) -> AuditRecord:
    return AuditRecord.for_item(
        mailbox_id=mailbox_id,
        actor=ACTOR,
        action=action,
        kind=kind,
        outlook_id=outlook_id,
        crm_id=str(crm_id) if crm_id else None,
    )


def _audit_action(action: CreateInCrm | UpdateCrm) -> AuditAction:
    return AuditAction.CREATED_IN_CRM if isinstance(action, CreateInCrm) else AuditAction.UPDATED_IN_CRM


def _read_columns(table: str, mapped: Sequence[str]) -> list[str]:
    """The columns a CRM state reads: the mapped ones except party lists, then the owner (last)."""
    parties = PARTY_COLUMNS.get(table, frozenset())
    return [*(column for column in mapped if column not in parties), _OWNER_COLUMN]


def _crm_state(
    mailbox: Mailbox, record_id: uuid.UUID, row: Mapping[str, object] | None, columns: Sequence[str]
) -> CrmState:
    if row is None:
        return CrmState(record_id, None)
    owner = row.get(_OWNER_COLUMN)
    owned = isinstance(owner, str) and owner.lower() == mailbox.crm_user_id.lower()
    etag = row.get("@odata.etag")
    values = {column: row.get(column) for column in columns}
    return CrmState(record_id, values, etag if isinstance(etag, str) else None, owned)


# --- parties ------------------------------------------------------------------------------------


class PartyResolver:
    """Resolves party addresses for one run and one CRM user (cached: a thread repeats addresses).

    A lookup the user is not allowed to make leaves the address unresolved instead of failing."""

    def __init__(self, crm: CrmPort, caller: str) -> None:
        self._crm = crm
        self._caller = caller
        self._cache: dict[str, RecordRef | None] = {}

    async def party(self, spec: PartySpec) -> Party:
        address = spec.address.lower()
        if address not in self._cache:
            try:
                found = await self._crm.find_by_email(address, caller=self._caller)
            except CrmError as error:
                if error.retryable:
                    raise
                # The user may not read one of the tables (e.g. no lead privilege): the address alone
                # is still a valid party, and the item must not be parked for it.
                logger.info("party resolution failed (%s); keeping the address unresolved", error.code)
                found = []
            self._cache[address] = found[0] if found else None
        return Party(spec.participation, self._cache[address], spec.address)

    async def parties(self, values: Mapping[str, CrmValue], columns: frozenset[str]) -> tuple[Party, ...]:
        specs = [spec for column in sorted(columns) for spec in _specs(values.get(column))]
        return tuple([await self.party(spec) for spec in specs])


def _specs(value: CrmValue) -> tuple[PartySpec, ...]:
    return value if isinstance(value, tuple) else ()


# --- the Outlook side ---------------------------------------------------------------------------


class OutlookSide(Protocol):
    """The Outlook writes a plan may contain, for one mailbox (see :class:`GraphOutlookSide`)."""

    async def stamp_many(self, kind: ItemKind, stamps: Mapping[str, uuid.UUID]) -> set[str]:
        """Stamp items (item id -> CRM id); the ids stamped. An item deleted meanwhile, or of a kind
        that cannot carry a stamp (To Do tasks), is left out."""
        ...

    async def create(self, kind: ItemKind, item: NeutralContent, crm_id: uuid.UUID) -> OutlookItem: ...

    async def update(
        self, kind: ItemKind, item_id: str, item: NeutralContent, crm_id: uuid.UUID | None
    ) -> OutlookItem: ...

    async def delete(self, kind: ItemKind, item_id: str) -> None: ...


class GraphOutlookSide:
    """:class:`OutlookSide` on :class:`~shared.outlook.writers.OutlookWriter` for one mailbox.

    ``task_list_id``: the To Do list this run's tasks live in (tasks are addressed within a list).
    """

    def __init__(self, writer: OutlookWriter, mailbox_id: str, *, task_list_id: str | None = None) -> None:
        self._writer = writer
        self._mailbox = mailbox_id
        self._task_list = task_list_id

    def _list(self) -> str:
        if self._task_list is None:
            raise ValueError("To Do tasks are written within a list: pass task_list_id")
        return self._task_list

    async def stamp_many(self, kind: ItemKind, stamps: Mapping[str, uuid.UUID]) -> set[str]:
        if kind not in STAMPABLE_KINDS or not stamps:
            return set()
        gone = await self._writer.stamp_many(self._mailbox, kind, {i: str(c) for i, c in stamps.items()})
        return set(stamps) - gone

    async def create(self, kind: ItemKind, item: NeutralContent, crm_id: uuid.UUID) -> OutlookItem:
        if isinstance(item, Contact):
            return await self._writer.create_contact(self._mailbox, item, crm_id=str(crm_id))
        if isinstance(item, Appointment):
            return await self._writer.create_event(self._mailbox, item, crm_id=str(crm_id))
        if isinstance(item, Task):
            return await self._writer.create_task(self._mailbox, self._list(), item)
        raise ValueError("emails are never created in Outlook from the CRM")

    async def update(
        self, kind: ItemKind, item_id: str, item: NeutralContent, crm_id: uuid.UUID | None
    ) -> OutlookItem:
        stamp = str(crm_id) if crm_id else None
        if isinstance(item, Contact):
            return await self._writer.update_contact(self._mailbox, item_id, item, crm_id=stamp)
        if isinstance(item, Appointment):
            return await self._writer.update_event(self._mailbox, item_id, item, crm_id=stamp)
        if isinstance(item, Task):
            return await self._writer.update_task(self._mailbox, self._list(), item_id, item)
        raise ValueError("emails are never changed in Outlook from the CRM")

    async def delete(self, kind: ItemKind, item_id: str) -> None:
        if kind is ItemKind.CONTACT:
            await self._writer.delete_contact(self._mailbox, item_id)
        elif kind is ItemKind.APPOINTMENT:
            await self._writer.delete_event(self._mailbox, item_id)
        elif kind is ItemKind.TASK:
            await self._writer.delete_task(self._mailbox, self._list(), item_id)
        else:
            raise ValueError("emails are never deleted in Outlook by the sync")


# --- results ------------------------------------------------------------------------------------

_BULK_ACTIONS = (CreateInCrm, UpdateCrm, StampOutlook, WriteLink, Conflict, Skip)


def bulk_eligible(actions: Sequence[Action]) -> bool:
    """Plans that only upsert in the CRM, stamp and link (or just refresh a link, the echo of a
    stamp): the common case, applied in bulk."""
    return any(isinstance(a, CreateInCrm | UpdateCrm | WriteLink) for a in actions) and all(
        isinstance(a, _BULK_ACTIONS) for a in actions
    )


@dataclass(frozen=True, slots=True)
class BulkPlan:
    """One item's :func:`bulk_eligible` plan for :meth:`Applier.apply_bulk`.

    ``new_link``: when planned, no link row held the item or the record, so the link can be
    inserted in a batch; otherwise it is written with the careful, replacing path."""

    actions: Sequence[Action]
    projection: Mapping[str, CrmValue]
    new_link: bool


@dataclass(frozen=True, slots=True)
class AppliedItem:
    """What applying one item's plan did (counts, and the values fitted to CRM limits)."""

    crm_writes: int = 0
    outlook_writes: int = 0
    linked: bool = False
    unlinked: bool = False
    skipped: str | None = None
    fitted: tuple[Fitted, ...] = ()


@dataclass
class _Written:
    """One plan's run: its party resolver and projection, and the versions its writes produced (for a
    ``WriteLink`` that takes them from the write)."""

    resolver: PartyResolver
    projection: Mapping[str, CrmValue]
    outlook: tuple[str, str | None] | None = None
    crm_etag: str | None = None
    crm_writes: int = 0
    outlook_writes: int = 0
    fitted: list[Fitted] = field(default_factory=list)


class Applier:
    """Executes planned actions for one mailbox's items (constructor-injected ports and clock)."""

    def __init__(
        self,
        *,
        crm: CrmPort,
        links: LinkStore,
        audit: AuditTrail,
        outlook: OutlookSide | None = None,
    ) -> None:
        self._crm = crm
        self._links = links
        self._audit = audit
        self._outlook = outlook

    async def read_crm_state(self, mailbox: Mailbox, kind: ItemKind, record_id: uuid.UUID) -> CrmState:
        """The record as the mailbox's CRM user sees it, or ``values=None`` if it does not exist."""
        return (await self.read_crm_states(mailbox, kind, [record_id]))[record_id]

    async def read_crm_states(
        self, mailbox: Mailbox, kind: ItemKind, record_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, CrmState]:
        """Several records in one request (a page's worth), each as :meth:`read_crm_state` reads it."""
        if not record_ids:
            return {}
        fmap = field_map(kind)
        columns = _read_columns(fmap.table, fmap.columns)
        caller = mailbox.crm_caller_object_id
        if len(record_ids) == 1:
            (record_id,) = record_ids
            rows = {record_id: await self._crm.get(fmap.table, record_id, select=columns, caller=caller)}
        else:
            rows = await self._crm.get_many(
                fmap.table, list(dict.fromkeys(record_ids)), select=columns, caller=caller
            )
        return {
            record_id: _crm_state(mailbox, record_id, rows.get(record_id), columns[:-1])
            for record_id in record_ids
        }

    async def apply(
        self,
        mailbox: Mailbox,
        kind: ItemKind,
        actions: Sequence[Action],
        *,
        resolver: PartyResolver,
        projection: Mapping[str, CrmValue] | None = None,
    ) -> AppliedItem:
        """Run ``actions`` in order. A failed CRM write raises its :class:`CrmError` (nothing after it
        runs, so the link is not written and a rerun repeats the plan). ``projection``: the Outlook
        item's full CRM projection, so an update of one party column keeps the others."""
        written = _Written(resolver, projection or {})
        linked = unlinked = False
        skipped: str | None = None
        for action in actions:
            match action:
                case CreateInCrm() | UpdateCrm() | DeleteInCrm():
                    await self._crm_write(mailbox, kind, action, written)
                case StampOutlook(item_id=item_id, crm_id=crm_id):
                    await self._stamp_all(kind, {item_id: (crm_id, written)})
                case CreateInOutlook() | UpdateOutlook() | DeleteInOutlook():
                    await self._outlook_write(mailbox, kind, action, written)
                case WriteLink():
                    await self._write_link(mailbox.mailbox_id, kind, self._with_versions(action, written))
                    linked = True
                case UnlinkOnly(outlook_id=outlook_id) | DropLink(outlook_id=outlook_id):
                    await self._drop_link(mailbox.mailbox_id, kind, outlook_id)
                    unlinked = True
                case Conflict(column=column, winner=winner, rule=rule):
                    logger.info("conflict on %s.%s settled for %s by %s", kind.value, column, winner, rule)
                case Skip(reason=reason):
                    skipped = reason
        return AppliedItem(
            written.crm_writes, written.outlook_writes, linked, unlinked, skipped, tuple(written.fitted)
        )

    async def apply_bulk(
        self, mailbox: Mailbox, kind: ItemKind, plans: Sequence[BulkPlan], *, resolver: PartyResolver
    ) -> list[AppliedItem | CrmError]:
        """Apply many plans of the :func:`bulk_eligible` shape at once: every CRM upsert in one
        ``$batch`` (continue-on-error), the stamps in Graph JSON batches, new links in entity-group
        transactions. Same commit order per item as :meth:`apply` (CRM, stamp, link); an item whose
        CRM write failed gets its error back and nothing after the CRM write is done for it."""
        written = [_Written(resolver, plan.projection) for plan in plans]
        ops: list[Upsert] = []
        owners: list[int] = []
        for index, plan in enumerate(plans):
            for action in plan.actions:
                if isinstance(action, CreateInCrm | UpdateCrm):
                    for op in await self._crm_ops(action, written[index]):
                        ops.append(op)
                        owners.append(index)
        failed: dict[int, CrmError] = {}
        results = await self._crm.apply_batch(ops, caller=mailbox.crm_caller_object_id) if ops else []
        for index, result in zip(owners, results, strict=True):
            if not result.ok:
                failed.setdefault(
                    index, result.error or CrmError("a batch operation failed", status=result.status)
                )
            else:
                written[index].crm_etag = result.etag
        done = [index for index in range(len(plans)) if index not in failed]
        for index in done:
            for action in plans[index].actions:
                if isinstance(action, CreateInCrm | UpdateCrm):
                    self._written_to_crm(action, written[index])
        await self._stamp_many(kind, [(plans[i], written[i]) for i in done])
        await self._write_links(
            mailbox.mailbox_id,
            kind,
            [
                (plans[i].new_link, self._with_versions(action, written[i]))
                for i in done
                for action in plans[i].actions
                if isinstance(action, WriteLink)
            ],
        )
        await self._record_many(
            mailbox.mailbox_id,
            kind,
            [
                (_audit_action(action), action.record_id)
                for i in done
                for action in plans[i].actions
                if isinstance(action, CreateInCrm | UpdateCrm)
            ],
        )
        return [
            failed[index]
            if index in failed
            else AppliedItem(
                written[index].crm_writes,
                written[index].outlook_writes,
                linked=any(isinstance(a, WriteLink) for a in plans[index].actions),
                skipped=next((a.reason for a in plans[index].actions if isinstance(a, Skip)), None),
                fitted=tuple(written[index].fitted),
            )
            for index in range(len(plans))
        ]

    async def _stamp_many(self, kind: ItemKind, plans: Sequence[tuple[BulkPlan, _Written]]) -> None:
        await self._stamp_all(
            kind,
            {
                action.item_id: (action.crm_id, written)
                for plan, written in plans
                for action in plan.actions
                if isinstance(action, StampOutlook)
            },
        )

    async def _stamp_all(self, kind: ItemKind, pending: Mapping[str, tuple[uuid.UUID, _Written]]) -> None:
        """Stamp the CRM ids (item id -> (CRM id, its plan's writes)). An item deleted since its page
        was read is not an error: the link is still written, so the next delta's removal reaches the
        record through it."""
        if self._outlook is None or not pending:
            return
        stamped = await self._outlook.stamp_many(
            kind, {item_id: crm for item_id, (crm, _) in pending.items()}
        )
        if len(stamped) < len(pending) and kind in STAMPABLE_KINDS:
            gone = len(pending) - len(stamped)
            logger.info("%d %s(s) deleted in Outlook before their stamp; linked anyway", gone, kind.value)
        for item_id in stamped:
            written = pending[item_id][1]
            written.outlook = (item_id, _UNKNOWN_CHANGE_KEY)
            written.outlook_writes += 1

    async def _write_links(self, mailbox_id: str, kind: ItemKind, links: Sequence[tuple[bool, Link]]) -> None:
        """New links (nothing held either side when planned) go in batches; the rest one by one."""
        fresh = [to_stored_link(mailbox_id, kind, link) for new, link in links if new]
        others = [link for new, link in links if not new]
        try:
            if fresh:
                await self._links.create_many(fresh)
        except LinkAlreadyExists:
            # A crashed run's link or a concurrent write: the careful path replaces stale rows.
            others += [link for new, link in links if new]
        await bounded_gather(self._write_link(mailbox_id, kind, link) for link in others)

    async def _record_many(
        self, mailbox_id: str, kind: ItemKind, entries: Sequence[tuple[AuditAction, uuid.UUID]]
    ) -> None:
        if entries:
            await self._audit.append_many(
                [_audit_record(mailbox_id, kind, action, crm_id) for action, crm_id in entries]
            )

    # -- CRM ------------------------------------------------------------------------------------

    async def _crm_write(
        self,
        mailbox: Mailbox,
        kind: ItemKind,
        action: CreateInCrm | UpdateCrm | DeleteInCrm,
        written: _Written,
    ) -> None:
        caller = mailbox.crm_caller_object_id
        if isinstance(action, DeleteInCrm):
            await self._crm.delete(action.table, action.record_id, if_match=action.if_match, caller=caller)
            await self._record(mailbox.mailbox_id, kind, AuditAction.DELETED_IN_CRM, action.record_id)
            written.crm_writes += 1
            return
        ops = await self._crm_ops(action, written)
        written.crm_etag = await self._run(ops, caller)
        self._written_to_crm(action, written)
        await self._record(mailbox.mailbox_id, kind, _audit_action(action), action.record_id)

    async def _crm_ops(self, action: CreateInCrm | UpdateCrm, written: _Written) -> list[Upsert]:
        """The upserts of one create (plus its follow-up update) or update, parties resolved."""
        if isinstance(action, CreateInCrm):
            ops = [await self._upsert(action.table, action.record_id, action.values, written)]
            if action.then_update:
                later = await self._upsert(action.table, action.record_id, action.then_update, written)
                ops.append(dataclasses.replace(later, if_match="*"))
            return ops
        # A party list is replaced whole: send every party column, the changed ones on top.
        values = dict(action.values)
        parties = PARTY_COLUMNS.get(action.table, frozenset())
        if parties & set(values):
            projection = written.projection
            values = {column: projection[column] for column in parties if column in projection} | values
        op = await self._upsert(action.table, action.record_id, values, written)
        return [dataclasses.replace(op, if_match=action.if_match or "*")]

    @staticmethod
    def _written_to_crm(action: CreateInCrm | UpdateCrm, written: _Written) -> None:
        written.crm_writes += 1
        for note in action.fitted:
            written.fitted.append(note)
            logger.info(
                "fitted %s.%s from %d to %d characters",
                note.table,
                note.column,
                note.original_length,
                note.max_length,
            )

    async def _upsert(
        self,
        table: str,
        record_id: uuid.UUID,
        values: Mapping[str, CrmValue],
        written: _Written,
    ) -> Upsert:
        party_columns = PARTY_COLUMNS.get(table, frozenset())
        fields: dict[str, FieldValue] = {}
        for column, value in values.items():
            if column in party_columns:
                continue
            if isinstance(value, tuple):
                raise ValueError(f"{table}.{column}: a party list outside the table's party columns")
            fields[column] = value
        present = frozenset(column for column in party_columns if column in values)
        return Upsert(table, fields, id=record_id, parties=await written.resolver.parties(values, present))

    async def _run(self, ops: list[Upsert], caller: str) -> str | None:
        """One upsert alone, several as one change set; the etag after the last one."""
        if len(ops) == 1:
            return (await self._crm.upsert(ops[0], caller=caller)).etag
        results = await self._crm.apply_batch(ops, atomic=True, caller=caller)
        for result in results:
            if not result.ok:
                raise result.error or CrmError("a change set failed without an error", status=result.status)
        return results[-1].etag

    # -- Outlook --------------------------------------------------------------------------------

    async def _outlook_write(
        self,
        mailbox: Mailbox,
        kind: ItemKind,
        action: CreateInOutlook | UpdateOutlook | DeleteInOutlook,
        written: _Written,
    ) -> None:
        if self._outlook is None:
            raise RuntimeError("this plan writes to Outlook but the applier has no Outlook side")
        if isinstance(action, DeleteInOutlook):
            await self._outlook.delete(kind, action.item_id)
            await self._record(mailbox.mailbox_id, kind, AuditAction.DELETED_IN_OUTLOOK, None, action.item_id)
        elif isinstance(action, CreateInOutlook):
            created = await self._outlook.create(kind, action.item, action.crm_id)
            written.outlook = (created.item_id, created.change_key)
            await self._record(mailbox.mailbox_id, kind, AuditAction.CREATED_IN_OUTLOOK, action.crm_id)
        else:
            updated = await self._outlook.update(kind, action.item_id, action.item, None)
            written.outlook = (updated.item_id, updated.change_key)
            await self._record(mailbox.mailbox_id, kind, AuditAction.UPDATED_IN_OUTLOOK, None, action.item_id)
        written.outlook_writes += 1

    # -- links ----------------------------------------------------------------------------------

    @staticmethod
    def _with_versions(action: WriteLink, written: _Written) -> Link:
        link = action.link
        if action.outlook_from_write and written.outlook is not None:
            link = dataclasses.replace(
                link, outlook_id=written.outlook[0], outlook_change_key=written.outlook[1]
            )
        if action.crm_from_write:
            link = dataclasses.replace(link, crm_etag=written.crm_etag)
        return link

    async def _write_link(self, mailbox_id: str, kind: ItemKind, link: Link) -> None:
        """Create or overwrite the link; a stale link holding either side (a crashed run's, or an
        item re-created in Outlook) is replaced."""
        row = to_stored_link(mailbox_id, kind, link)
        current = await self._links.get_by_outlook(mailbox_id, kind, link.outlook_id)
        if current is not None and current.crm_id == row.crm_id:
            await self._links.update(dataclasses.replace(row, etag=current.etag))
            return
        if current is not None:
            await self._links.delete(current)
        holder = await self._links.get_by_crm(mailbox_id, row.crm_table, row.crm_id)
        if holder is not None:
            await self._links.delete(holder)
        await self._links.create(row)

    async def _drop_link(self, mailbox_id: str, kind: ItemKind, outlook_id: str) -> None:
        current = await self._links.get_by_outlook(mailbox_id, kind, outlook_id)
        if current is not None:
            await self._links.delete(current)
            await self._record(mailbox_id, kind, AuditAction.UNLINKED, uuid.UUID(current.crm_id), outlook_id)

    async def _record(
        self,
        mailbox_id: str,
        kind: ItemKind,
        action: AuditAction,
        crm_id: uuid.UUID | None,
        outlook_id: str | None = None,
    ) -> None:
        await self._audit.append(_audit_record(mailbox_id, kind, action, crm_id, outlook_id))
