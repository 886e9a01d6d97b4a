"""The applier: executes planned actions against Dataverse, Outlook and the link map, and audits them.

The planner (:mod:`shared.sync.planner`) is pure; this is the I/O half, in the commit order
docs/ARCHITECTURE.md explains: CRM writes first, then Outlook writes, then the link rows - so a
crash anywhere re-runs the plan and every step replays harmlessly: creates are upserts under the
deterministic id (``PATCH /<set>(<id>)`` creates or updates: "Use Upsert to Create or Update a
record", learn.microsoft.com/power-apps/developer/data-platform/use-upsert-insert-update-record), a
delete of a gone record is done, and link writes overwrite what a crashed run left.

One executor: a run applies a page's plans together, and applying one item is applying a batch of
one. Phases, each over the plans still standing:

1. contacts for unknown senders (create-only), so the emails' parties resolve to them;
2. CRM writes: every plan's upserts, deletes and regarding writes in one ``$batch`` (continue on
   error; Dataverse runs a batch's requests in order: "Execute batch operations using the Web
   API"); a plan with a failed operation gets its error back and nothing after it is done;
3. attachment copies of the plans whose CRM writes succeeded;
4. Outlook writes: each plan's creates, updates, deletes and category changes;
5. link rows: new links in entity-group transactions, the rest one by one; unlinks;
6. audit: one record per write and per conflict, hashed ids only, in entity-group transactions.

An Outlook failure is re-raised after the other plans' links and audit are written, so the queue
retries the job and the rerun repeats only what was not linked.

Every CRM call impersonates the mailbox's CRM user (``caller=crm_caller_object_id``), so the
user's security roles decide what may be written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from shared import telemetry
from shared.crm.errors import CrmError, DuplicateRecord
from shared.crm.limits import Fitted
from shared.crm.port import CrmPort, Delete, FieldValue, Operation, RecordRef, Upsert
from shared.domain.model import ItemKind
from shared.store.errors import LinkAlreadyExists
from shared.store.ports import AuditTrail, LinkStore
from shared.store.records import AuditAction, AuditRecord, Mailbox
from shared.sync.concurrency import bounded_gather
from shared.sync.crm_writes import CrmOperations
from shared.sync.fieldmaps import CrmValue
from shared.sync.links import LinkWriter, to_stored_link
from shared.sync.parties import PartyResolver
from shared.sync.plan import ACTOR as ACTOR  # noqa: PLC0414 - re-exported: the engine's audit actor
from shared.sync.plan import (
    Action,
    Conflict,
    CopyAttachments,
    CreateInCrm,
    CreateInOutlook,
    CreateSenderContact,
    DeleteInCrm,
    DeleteInOutlook,
    DropLink,
    Link,
    RemoveTrackedCategory,
    SecuredField,
    SetRegarding,
    Skip,
    UnlinkOnly,
    UpdateCrm,
    UpdateOutlook,
    WriteLink,
)
from shared.sync.ports import OutlookSide
from shared.sync.tracking.attachments import copy_attachments

logger = logging.getLogger(__name__)
_A = TypeVar("_A")

_EMAIL_TABLE = "email"
_CRM_AUDIT = {CreateInCrm: AuditAction.CREATED_IN_CRM, UpdateCrm: AuditAction.UPDATED_IN_CRM}


@dataclass(frozen=True, slots=True)
class ItemPlan:
    """One item's plan. ``projection``: the Outlook item's full CRM projection, so an update of one
    party column keeps the others. ``new_link``: when planned, no link row held the item or the
    record, so its link can be inserted in a batch; otherwise the careful, replacing path writes it."""

    actions: Sequence[Action]
    projection: Mapping[str, CrmValue] = field(default_factory=dict)
    new_link: bool = False


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
    """One plan's progress: the versions its writes produced (for a ``WriteLink`` that takes them
    from the write), its counts, and the error that stopped it."""

    plan: ItemPlan
    outlook: tuple[str, str | None] | None = None
    crm_etag: str | None = None
    crm_writes: int = 0
    outlook_writes: int = 0
    linked: bool = False
    unlinked: bool = False
    fitted: list[Fitted] = field(default_factory=list)
    error: Exception | None = None

    def of(self, kind: type[_A]) -> list[_A]:
        return [action for action in self.plan.actions if isinstance(action, kind)]


class Applier:
    """Executes plans for one run: one mailbox, one item kind (and, for tasks, one To Do list)."""

    def __init__(
        self,
        *,
        crm: CrmPort,
        links: LinkStore,
        audit: AuditTrail,
        mailbox: Mailbox,
        kind: ItemKind,
        resolver: PartyResolver,
        outlook: OutlookSide | None = None,
    ) -> None:
        self._crm = crm
        self._links = links
        self._audit = audit
        self._mailbox = mailbox
        self._kind = kind
        self._resolver = resolver
        self._outlook = outlook
        self._caller = mailbox.crm_caller_object_id
        self._records: list[AuditRecord] = []
        self._link_writer = LinkWriter(links, mailbox.mailbox_id, kind)
        self._operations = CrmOperations(resolver)

    async def apply(self, plans: Sequence[ItemPlan]) -> list[AppliedItem | CrmError]:
        """Apply every plan (see the module docstring); a plan whose CRM write failed gets its
        :class:`CrmError` back. An Outlook failure is raised once the others are linked."""
        written = [_Written(plan) for plan in plans]
        self._records = []
        await self._sender_contacts(written)
        await self._crm_writes(written)
        telemetry.crm_written(self._kind.value, sum(state.crm_writes for state in written))
        await self._attachments(written)
        outlook_failure = await self._outlook_writes(written)
        telemetry.outlook_written(self._kind.value, sum(state.outlook_writes for state in written))
        await self._link_writes(written)
        for state in written:
            self._records += [self._audited(AuditAction.CONFLICT, c, None) for c in state.of(Conflict)]
            self._records += [
                self._audited(AuditAction.FIELD_SKIPPED, note, note.record_id)
                for note in state.of(SecuredField)
            ]
        if self._records:
            await self._audit.append_many(self._records)
        if outlook_failure is not None:
            raise outlook_failure
        return [self._result(state) for state in written]

    @staticmethod
    def _result(state: _Written) -> AppliedItem | CrmError:
        if isinstance(state.error, CrmError):
            return state.error
        skipped = next((a.reason for a in state.plan.actions if isinstance(a, Skip)), None)
        return AppliedItem(
            state.crm_writes, state.outlook_writes, state.linked, state.unlinked, skipped, tuple(state.fitted)
        )

    # -- 1. contacts for unknown senders --------------------------------------------------------

    async def _sender_contacts(self, written: Sequence[_Written]) -> None:
        made: dict[str, CrmError | None] = {}
        for state in written:
            for action in state.of(CreateSenderContact):
                key = str(action.record_id)
                if key not in made:
                    made[key] = await self._sender_contact(action)
                if made[key] is not None:
                    state.error = made[key]

    async def _sender_contact(self, action: CreateSenderContact) -> CrmError | None:
        fields: dict[str, FieldValue] = {"emailaddress1": action.address, "lastname": action.name[:50]}
        create_only = Upsert("contact", fields, id=action.record_id, if_none_match=True)
        try:
            with contextlib.suppress(DuplicateRecord):  # made earlier, maybe edited since: left alone
                await self._crm.upsert(create_only, caller=self._caller)
                self._records.append(self._audited(AuditAction.CONTACT_CREATED, action, action.record_id))
        except CrmError as error:
            if error.retryable:
                raise
            return error
        self._resolver.remember(action.address, RecordRef("contact", action.record_id))
        return None

    # -- 2. CRM writes ----------------------------------------------------------------------------

    async def _crm_writes(self, written: Sequence[_Written]) -> None:
        ops: list[Operation] = []
        owners: list[tuple[_Written, Action]] = []
        for state in written:
            if state.error is not None:
                continue
            for action in state.plan.actions:
                for op in await self._operations.of(action, state.plan.projection):
                    ops.append(op)
                    owners.append((state, action))
        if not ops:
            return
        results = await self._crm.apply_batch(ops, caller=self._caller)
        for (state, _), op, result in zip(owners, ops, results, strict=True):
            if state.error is not None:
                continue  # an earlier operation of this plan failed: its later ones do not count
            if not result.ok and not (isinstance(op, Delete) and result.status == 404):
                state.error = result.error or CrmError("a batch operation failed", status=result.status)
                continue
            if isinstance(op, Upsert) and result.etag:
                state.crm_etag = result.etag
        done: set[tuple[int, int]] = set()
        for state, action in owners:
            if state.error is None and (id(state), id(action)) not in done:
                done.add((id(state), id(action)))
                self._crm_written(state, action)

    def _crm_written(self, state: _Written, action: Action) -> None:
        """Count and audit one CRM write, naming both sides' ids (``crmsync audit --item`` finds it
        by either)."""
        item = next((link.link.outlook_id for link in state.of(WriteLink) if link.link.outlook_id), None)
        if isinstance(action, CreateInCrm | UpdateCrm):
            state.crm_writes += 1
            state.fitted += action.fitted
            for note in action.fitted:
                logger.info(
                    "fitted %s.%s from %d to %d characters",
                    note.table,
                    note.column,
                    note.original_length,
                    note.max_length,
                )
            self._records.append(self._audited(_CRM_AUDIT[type(action)], action, action.record_id, item))
        elif isinstance(action, DeleteInCrm):
            state.crm_writes += 1
            self._records.append(self._audited(AuditAction.DELETED_IN_CRM, action, action.record_id, item))
        elif isinstance(action, SetRegarding):
            self._records.append(self._audited(AuditAction.REGARDING_SET, action, action.record_id, item))

    # -- 3. attachments ---------------------------------------------------------------------------

    async def _attachments(self, written: Sequence[_Written]) -> None:
        for state in written:
            for action in state.of(CopyAttachments) if state.error is None else []:
                if self._outlook is None:
                    raise RuntimeError("copying attachments needs the Outlook side")
                try:
                    await copy_attachments(
                        crm=self._crm,
                        caller=self._caller,
                        source=self._outlook,
                        message_id=action.message_id,
                        email_id=action.record_id,
                        max_bytes=self._mailbox.settings.max_attachment_bytes,
                    )
                except CrmError as error:
                    if error.retryable:
                        raise
                    state.error = error
                    continue
                self._records.append(self._audited(AuditAction.ATTACHMENTS_COPIED, action, action.record_id))

    # -- 4. Outlook writes ------------------------------------------------------------------------

    async def _outlook_writes(self, written: Sequence[_Written]) -> Exception | None:
        standing = [state for state in written if state.error is None]
        failure: Exception | None = None
        for state in standing:
            try:
                for action in state.plan.actions:
                    await self._outlook_write(state, action)
            except Exception as error:
                state.error = error
                failure = failure or error
        return failure

    async def _outlook_write(self, state: _Written, action: Action) -> None:
        if isinstance(action, CreateInOutlook):
            created = await self._side().create(self._kind, action.item, action.crm_id)
            state.outlook = (created.item_id, created.change_key)
            record = self._audited(AuditAction.CREATED_IN_OUTLOOK, action, action.crm_id, created.item_id)
        elif isinstance(action, UpdateOutlook):
            updated = await self._side().update(self._kind, action.item_id, action.item)
            state.outlook = (updated.item_id, updated.change_key)
            record = self._audited(AuditAction.UPDATED_IN_OUTLOOK, action, None, action.item_id)
        elif isinstance(action, DeleteInOutlook):
            await self._side().delete(self._kind, action.item_id)
            record = self._audited(AuditAction.DELETED_IN_OUTLOOK, action, None, action.item_id)
        elif isinstance(action, RemoveTrackedCategory):
            await self._side().set_categories(action.message_id, action.categories)
            record = self._audited(AuditAction.CATEGORY_REMOVED, action, None, action.message_id)
        else:
            return
        state.outlook_writes += 1
        self._records.append(record)

    def _side(self) -> OutlookSide:
        if self._outlook is None:
            raise RuntimeError("this plan writes to Outlook but the applier has no Outlook side")
        return self._outlook

    # -- 5. links ---------------------------------------------------------------------------------

    async def _link_writes(self, written: Sequence[_Written]) -> None:
        """New links (nothing held either side when planned) go in batches; the rest one by one."""
        mailbox_id = self._mailbox.mailbox_id
        fresh: list[Link] = []
        careful: list[Link] = []
        for state in written:
            if state.error is not None:
                continue
            for action in state.plan.actions:
                if isinstance(action, WriteLink):
                    (fresh if state.plan.new_link else careful).append(_with_versions(action, state))
                    state.linked = True
                elif isinstance(action, UnlinkOnly) and action.tombstone is not None:
                    await self._link_writer.write(action.tombstone)
                    self._records.append(
                        self._audited(AuditAction.UNLINKED, action, action.crm_id, action.outlook_id)
                    )
                    state.unlinked = True
                elif isinstance(action, UnlinkOnly | DropLink):
                    dropped = await self._link_writer.drop(action.outlook_id)
                    if dropped is not None:
                        self._records.append(
                            self._audited(AuditAction.UNLINKED, action, dropped, action.outlook_id)
                        )
                    state.unlinked = True
        try:
            if fresh:
                await self._links.create_many(
                    [to_stored_link(mailbox_id, self._kind, link) for link in fresh]
                )
        except LinkAlreadyExists:
            careful += fresh  # a crashed run's link or a concurrent write: the careful path replaces
        await bounded_gather(self._link_writer.write(link) for link in careful)

    # -- 6. audit ---------------------------------------------------------------------------------

    def _audited(
        self, what: AuditAction, action: Action, crm_id: object | None, outlook_id: str | None = None
    ) -> AuditRecord:
        reason = None
        if isinstance(action, Conflict):
            reason = f"{action.rule}.{action.winner.value}.{action.column}".lower()[:64]
            telemetry.record_conflict(self._kind.value, action.winner.value)
        elif isinstance(action, SecuredField):
            reason = f"{action.reason}.{action.column}"[:64]
        else:
            reason = reason_code(action.reason)
        return AuditRecord.for_item(
            mailbox_id=self._mailbox.mailbox_id,
            actor=ACTOR,
            action=what,
            kind=self._kind,
            outlook_id=outlook_id,
            crm_id=str(crm_id) if crm_id else None,
            reason_code=reason,
        )


def reason_code(reason: str) -> str | None:
    """The planner's reason as an audit code (``crmsync audit`` shows why an item was written):
    its words, lower-case and hyphenated. The planner's reasons are fixed phrases, never data."""
    return "-".join(re.findall(r"[a-z0-9]+", reason.lower()))[:64].rstrip("-") or None


def _with_versions(action: WriteLink, state: _Written) -> Link:
    link = action.link
    if action.outlook_from_write and state.outlook is not None:
        link = dataclasses.replace(link, outlook_id=state.outlook[0], outlook_change_key=state.outlook[1])
    if action.crm_from_write:
        link = dataclasses.replace(link, crm_etag=state.crm_etag)
    return link
