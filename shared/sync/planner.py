"""The pure planner: given both sides' state of one item and its link, say what to do.

Modelled on vdirsyncer's ``_get_actions``: no I/O, one commented case per situation, actions as
small frozen dataclasses that a separate applier executes in order (``WriteLink`` / ``DropLink`` /
``UnlinkOnly`` come last, so a crash before them re-runs the plan, and every write is
idempotent). Both directions use it: an Outlook delta (the Outlook state is known, the caller reads
the CRM record by the link or by :func:`~shared.sync.fieldmaps.crm_record_id`) and CRM change
tracking (the CRM state is known, the caller reads the linked Outlook item, or passes
``outlook=None`` for a record this mailbox does not hold yet).

Change detection, as vdirsyncer does it: the version first (change key, ETag), then the content
hash, so a version bump without a content change - typically the echo of our own write - is not a
change. Field values are then merged three ways (:mod:`shared.sync.merge`).

Delete policy ``dynamics`` follows "Deleting records that have been tracked with Dynamics 365 for
Outlook" (MicrosoftDocs/dynamics-365-customer-engagement, ce/outlook-addin/user-guide/
delete-records-that-have-been-tracked.md), which holds for server-side synchronization too:

- Outlook delete: a tracked email or contact stays in the CRM; an appointment or task is deleted
  in the CRM - here only if the mailbox user owns the record (the connector acts as the user and
  never deletes what another user owns; shared meetings and messages are kept).
- Untracking: the CRM copy is deleted only if the user owns it, and an appointment only if it is
  not over yet.
- CRM delete: an email stays in Outlook; a contact is removed from Outlook unless the user owns
  the record; an appointment is removed if the user owned it and it is not over; a task is removed
  if it is not completed.
- A side that changed since the last sync is never deleted because the other side was: the CRM
  copy is kept (unlinked) when it changed after the Outlook delete, and an Outlook item changed
  after the CRM delete is created in the CRM again (vdirsyncer: "deleted on one side but modified
  on the other"), except email, which the CRM keeps as a record and never re-creates.

Policy ``unlink`` never deletes anything: gone on one side only removes the link.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.crm.limits import Fitted
from shared.domain.model import (
    Appointment,
    Contact,
    Email,
    EventKind,
    FieldDirection,
    ItemKind,
    OutlookItem,
    Task,
    TaskStatus,
    content_hash,
)
from shared.sync.fieldmaps import FieldMap, crm_content_hash, crm_record_id, field_map, natural_key
from shared.sync.fieldmaps.base import CrmValue, canonical_crm_value, parse_utc
from shared.sync.merge import FieldBase, Side, merge_fields, unit_fingerprints

NeutralContent = Contact | Appointment | Task | Email


class GoneReason(enum.StrEnum):
    """Why an Outlook item no longer takes part: deleted, or still there but no longer tracked."""

    DELETED = "deleted"
    UNTRACKED = "untracked"


class DeletePolicy(enum.StrEnum):
    """What a delete on one side does to the other (see the module docstring)."""

    DYNAMICS = "dynamics"
    UNLINK = "unlink"


# --- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutlookState:
    """The Outlook side of one item: present with its neutral content, or gone (and why)."""

    item_id: str
    change_key: str | None = None
    item: NeutralContent | None = None
    gone: GoneReason | None = None
    crm_id: uuid.UUID | None = None  # the CRM id stamped on the item, if any

    def __post_init__(self) -> None:
        if self.gone is None and self.item is None:
            raise ValueError("a present Outlook item needs its content")

    @classmethod
    def from_outlook_item(cls, outlook_item: OutlookItem, *, tracked: bool = True) -> OutlookState:
        """From a delta entry; ``tracked`` is the tracking policy's verdict on a present item."""
        gone = GoneReason.DELETED if outlook_item.removed or outlook_item.item is None else None
        if gone is None and not tracked:
            gone = GoneReason.UNTRACKED
        try:
            stamp = uuid.UUID(outlook_item.crm_id) if outlook_item.crm_id else None
        except ValueError:
            stamp = None  # someone else's or a damaged stamp: ignored, the link map decides
        return cls(outlook_item.item_id, outlook_item.change_key, outlook_item.item, gone, stamp)


@dataclass(frozen=True, slots=True)
class CrmState:
    """The CRM side: the record's mapped column values, or ``values=None`` when it does not exist.

    A null column is present with ``None``; a column left out was not read (the adapter does not
    read party lists back) and is taken as unchanged since the last sync.

    ``owned_by_user``: the mailbox's CRM user owns the record (decides deletes; recorded in the link).
    """

    record_id: uuid.UUID
    values: Mapping[str, object] | None
    etag: str | None = None
    owned_by_user: bool = False


@dataclass(frozen=True, slots=True)
class Link:
    """What the link rows remember of the last sync of one item (both sides' versions and content)."""

    outlook_id: str
    crm_id: uuid.UUID
    outlook_change_key: str | None
    crm_etag: str | None
    outlook_hash: str
    crm_hash: str
    synced_fields: Mapping[str, FieldBase] = field(default_factory=dict)
    owned_by_user: bool = False


@dataclass(frozen=True, slots=True)
class SyncPolicy:
    """A mailbox's settings for one item kind: direction overrides, tie-break, delete policy."""

    directions: Mapping[str, FieldDirection] = field(default_factory=dict)
    tie_break: Side = Side.CRM
    delete_policy: DeletePolicy = DeletePolicy.DYNAMICS


# --- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateInCrm:
    """Create the record with this id (replaying it must upsert). ``then_update``: columns the
    contract forbids on create, to write by an update right after."""

    table: str
    record_id: uuid.UUID
    values: dict[str, CrmValue]
    then_update: dict[str, CrmValue]
    fitted: tuple[Fitted, ...] = ()
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateCrm:
    table: str
    record_id: uuid.UUID
    values: dict[str, CrmValue]
    if_match: str | None
    fitted: tuple[Fitted, ...] = ()
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteInCrm:
    table: str
    record_id: uuid.UUID
    if_match: str | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateInOutlook:
    """Create ``item`` in the mailbox, stamped with ``crm_id`` (see :class:`StampOutlook`)."""

    kind: ItemKind
    item: NeutralContent
    crm_id: uuid.UUID
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateOutlook:
    """Write ``item`` over the Outlook item; ``columns`` are the CRM columns that caused it."""

    item_id: str
    item: NeutralContent
    columns: tuple[str, ...]
    if_match: str | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StampOutlook:
    """Stamp the CRM id on the Outlook item (a single-value extended property), so the pair is found
    again without the link map - by a rerun after a lost link write, or by a repair. Callers
    planning a CRM record with no link look for an Outlook item carrying its id first."""

    item_id: str
    crm_id: uuid.UUID
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteInOutlook:
    item_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteLink:
    """Store ``link`` once the writes before it succeeded. Where ``outlook_from_write`` /
    ``crm_from_write`` is set, take the Outlook id and change key / the CRM ETag from the response
    of this plan's write to that side (the planner cannot know them)."""

    link: Link
    outlook_from_write: bool = False
    crm_from_write: bool = False
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UnlinkOnly:
    """Remove the link but keep the item on side ``kept`` (nothing is deleted)."""

    outlook_id: str
    crm_id: uuid.UUID
    kept: Side
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DropLink:
    """Remove the link of an item that is gone on both sides (or deleted by this plan)."""

    outlook_id: str
    crm_id: uuid.UUID
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflict:
    """Audit note: a field changed on both sides; ``winner`` was kept by ``rule`` (no values)."""

    column: str
    winner: Side
    rule: Literal["tie_break", "direction"]
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Skip:
    reason: str


Action = (
    CreateInCrm
    | UpdateCrm
    | DeleteInCrm
    | CreateInOutlook
    | UpdateOutlook
    | StampOutlook
    | DeleteInOutlook
    | WriteLink
    | UnlinkOnly
    | DropLink
    | Conflict
    | Skip
)


# --- the planner -------------------------------------------------------------------------------


def plan_item(
    kind: ItemKind,
    *,
    mailbox_id: str,
    outlook: OutlookState | None,
    link: Link | None,
    crm: CrmState | None,
    policy: SyncPolicy,
    now: dt.datetime,
) -> list[Action]:
    """Plan one item.

    Look the link up by either side, as vdirsyncer's status does: by the Outlook id, else by the CRM
    id the item maps to (its stamp or deterministic id), so a second copy of a message in the same
    mailbox finds the first one's link and is skipped instead of fighting over the record.
    ``outlook=None``: the mailbox has no such item (a CRM record routed to it by its filter).
    ``crm=None``: the CRM side was not read (an unlinked Outlook item: create, i.e. upsert, under the
    deterministic id). With a link, both sides' states are required (a missing item is a state
    with ``gone`` / ``values=None``).
    """
    fmap = field_map(kind)
    if link is not None and outlook is not None and outlook.item_id != link.outlook_id:
        # The record is linked to another item of this mailbox: a second copy of one message or
        # meeting (a message sent to oneself sits in Sent Items and in the Inbox) is tracked once.
        return [Skip(reason="another Outlook item of this mailbox is linked to the same CRM record")]
    present = None
    if outlook is not None and outlook.gone is None and outlook.item is not None:
        present = _Present(outlook.item_id, outlook.change_key, outlook.item, outlook.crm_id)
        if why := fmap.skip_reason(present.item):
            return [Skip(reason=why)]
    crm_values = _canonical(fmap, crm.values) if crm is not None and crm.values is not None else None
    planner = _ItemPlanner(fmap, kind, mailbox_id, policy, now)
    if link is None:
        return planner.unlinked(outlook, present, crm, crm_values)
    if outlook is None or crm is None:
        raise ValueError("a linked item needs both sides' state to be planned")
    return planner.linked(link, outlook, present, crm, crm_values)


def _unstampable(item: NeutralContent) -> bool:
    """An occurrence of a series carries no extended properties in Graph ("event resource type");
    its deterministic id (from its own iCalUId) finds the pair again instead."""
    return isinstance(item, Appointment) and item.event_kind is EventKind.OCCURRENCE


@dataclass(frozen=True, slots=True)
class _Present:
    """An Outlook item that is there and tracked."""

    item_id: str
    change_key: str | None
    item: NeutralContent
    crm_id: uuid.UUID | None = None


def _canonical(fmap: FieldMap[Any], values: Mapping[str, object]) -> dict[str, CrmValue]:
    """The mapped columns the CRM side reported; a column not read (a party list) stays absent."""
    return {column: canonical_crm_value(values[column]) for column in fmap.columns if column in values}


@dataclass(frozen=True, slots=True)
class _ItemPlanner:
    fmap: FieldMap[Any]
    kind: ItemKind
    mailbox_id: str
    policy: SyncPolicy
    now: dt.datetime

    # -- no link yet ---------------------------------------------------------------------------

    def unlinked(
        self,
        outlook: OutlookState | None,
        present: _Present | None,
        crm: CrmState | None,
        crm_values: dict[str, CrmValue] | None,
    ) -> list[Action]:
        if present is not None and crm is not None and crm_values is not None:
            # Both copies exist but were never linked: another mailbox already synced this message
            # or meeting (deterministic id), or a crash came between the create and the link
            # write. Link them and merge with an empty base (a value beats no value).
            return self.merge(present, crm, crm_values, {}, "linked existing copies", stamp=True)
        if present is not None:
            # New in Outlook, not in the CRM -> create it under its deterministic id.
            key = natural_key(self.mailbox_id, present.item_id, present.item)
            return self.create_in_crm(present, crm_record_id(self.kind, key), "new in Outlook")
        if outlook is None and crm is not None and crm_values is not None:
            # New in the CRM (routed here by the mailbox's filter), not in Outlook -> create it there.
            if why := self.fmap.crm_skip_reason(crm_values):
                return [Skip(reason=why)]
            item = self.fmap.item_from_crm(crm_values)
            projection = self.fmap.project(item).values
            link = Link(
                outlook_id="",
                crm_id=crm.record_id,
                outlook_change_key=None,
                crm_etag=crm.etag,
                outlook_hash=content_hash(item),
                crm_hash=crm_content_hash(self.fmap, crm_values),
                synced_fields=unit_fingerprints(projection, crm_values, self.fmap.units()),
                owned_by_user=crm.owned_by_user,
            )
            return [
                CreateInOutlook(kind=self.kind, item=item, crm_id=crm.record_id, reason="new in the CRM"),
                WriteLink(link=link, outlook_from_write=True, reason="new in the CRM"),
            ]
        # Gone from Outlook and never linked, or absent everywhere: nothing to do.
        return []

    # -- linked --------------------------------------------------------------------------------

    def linked(
        self,
        link: Link,
        outlook: OutlookState,
        present: _Present | None,
        crm: CrmState,
        crm_values: dict[str, CrmValue] | None,
    ) -> list[Action]:
        if crm_values is None:
            if present is None:
                # Gone on both sides -> forget the link.
                return [DropLink(outlook_id=link.outlook_id, crm_id=link.crm_id, reason="gone on both sides")]
            return self.crm_gone(link, present)
        if present is None:
            return self.outlook_gone(link, outlook, crm, crm_values)
        outlook_changed = self.outlook_changed(link, present)
        crm_changed = self.crm_changed(link, crm, crm_values)
        if not outlook_changed and not crm_changed:
            # Unchanged on both sides: a version bump alone (the echo of our own stamp, an edit of a
            # column crmsync does not sync) is not a change, and the content hashes already decide
            # the next check, so the link is rewritten only when the record changed hands.
            if crm.owned_by_user == link.owned_by_user:
                return []
            refreshed = dataclasses.replace(
                link,
                outlook_change_key=present.change_key,
                crm_etag=crm.etag,
                owned_by_user=crm.owned_by_user,
            )
            return [WriteLink(link=refreshed, reason="versions changed without a content change")]
        # Changed in Outlook, in the CRM, or in both -> per-field three-way merge: a field changed
        # on one side flows to the other where its direction allows; both changed -> tie-break.
        why = {
            (True, False): "changed in Outlook, CRM unchanged since last sync",
            (False, True): "changed in the CRM, Outlook unchanged since last sync",
            (True, True): "changed on both sides since last sync",
        }[(outlook_changed, crm_changed)]
        # Linked: the stamp went on before the link was first written (calendarView delta cannot
        # $expand it, so an event never shows it; re-stamping would echo every change).
        return self.merge(present, crm, crm_values, link.synced_fields, why, stamp=False)

    def outlook_changed(self, link: Link, present: _Present) -> bool:
        if present.change_key is not None and present.change_key == link.outlook_change_key:
            return False
        return content_hash(present.item) != link.outlook_hash

    def crm_changed(self, link: Link, crm: CrmState, crm_values: Mapping[str, CrmValue]) -> bool:
        if crm.etag is not None and crm.etag == link.crm_etag:
            return False
        return crm_content_hash(self.fmap, crm_values) != link.crm_hash

    def outlook_gone(
        self, link: Link, outlook: OutlookState, crm: CrmState, crm_values: Mapping[str, CrmValue]
    ) -> list[Action]:
        untracked = outlook.gone is GoneReason.UNTRACKED
        verb = "untracked" if untracked else "deleted"
        if self.crm_changed(link, crm, crm_values):
            # Gone from Outlook, but the CRM record changed since the last sync -> keep it, unlink.
            reason = f"{verb} in Outlook but changed in the CRM since last sync: CRM record kept"
            return [UnlinkOnly(outlook_id=link.outlook_id, crm_id=link.crm_id, kept=Side.CRM, reason=reason)]
        if self.deletes_crm_record(untracked, crm.owned_by_user, crm_values):
            # Gone from Outlook, CRM unchanged, and the delete policy says the CRM copy goes too.
            reason = f"{verb} in Outlook; the user owns the CRM record"
            return [
                DeleteInCrm(table=self.fmap.table, record_id=link.crm_id, if_match=crm.etag, reason=reason),
                DropLink(outlook_id=link.outlook_id, crm_id=link.crm_id, reason=reason),
            ]
        reason = f"{verb} in Outlook; the delete policy keeps the CRM record"
        return [UnlinkOnly(outlook_id=link.outlook_id, crm_id=link.crm_id, kept=Side.CRM, reason=reason)]

    def deletes_crm_record(self, untracked: bool, owned: bool, crm_values: Mapping[str, CrmValue]) -> bool:
        if self.policy.delete_policy is DeletePolicy.UNLINK or not owned:
            return False
        if untracked:
            return self.kind is not ItemKind.APPOINTMENT or not self.is_over(crm_values.get("scheduledend"))
        return self.kind in (ItemKind.APPOINTMENT, ItemKind.TASK)

    def is_over(self, end: CrmValue) -> bool:
        ended = parse_utc(end) if isinstance(end, str) else None
        return ended is not None and ended < self.now

    def crm_gone(self, link: Link, present: _Present) -> list[Action]:
        item = present.item
        if self.kind is ItemKind.EMAIL:
            # Deleting a CRM email never touches the mailbox, and the CRM's deletion stands.
            reason = "deleted in the CRM; the message stays in Outlook"
            return [
                UnlinkOnly(outlook_id=link.outlook_id, crm_id=link.crm_id, kept=Side.OUTLOOK, reason=reason)
            ]
        if self.outlook_changed(link, present):
            # Deleted in the CRM but changed in Outlook since the last sync -> create it again.
            return self.create_in_crm(present, link.crm_id, "deleted in the CRM but changed in Outlook since")
        if self.deletes_outlook_item(link, item):
            reason = "deleted in the CRM; the delete policy removes the Outlook copy"
            return [
                DeleteInOutlook(item_id=link.outlook_id, reason=reason),
                DropLink(outlook_id=link.outlook_id, crm_id=link.crm_id, reason=reason),
            ]
        reason = "deleted in the CRM; the delete policy keeps the Outlook item"
        return [UnlinkOnly(outlook_id=link.outlook_id, crm_id=link.crm_id, kept=Side.OUTLOOK, reason=reason)]

    def deletes_outlook_item(self, link: Link, item: NeutralContent) -> bool:
        if self.policy.delete_policy is DeletePolicy.UNLINK:
            return False
        if isinstance(item, Contact):
            return not link.owned_by_user
        if isinstance(item, Appointment):
            return link.owned_by_user and item.end >= self.now
        if isinstance(item, Task):
            return item.status is not TaskStatus.COMPLETED
        return False

    # -- writes --------------------------------------------------------------------------------

    def create_in_crm(self, present: _Present, record_id: uuid.UUID, reason: str) -> list[Action]:
        projection = self.fmap.project(present.item)
        create, later = self.split_for_create(projection.values)
        link = Link(
            outlook_id=present.item_id,
            crm_id=record_id,
            outlook_change_key=present.change_key,
            crm_etag=None,
            outlook_hash=content_hash(present.item),
            crm_hash=crm_content_hash(self.fmap, projection.values),
            # the new record holds the projection, and null in every column not written
            synced_fields=unit_fingerprints(
                projection.values, {c: projection.values.get(c) for c in self.fmap.columns}, self.fmap.units()
            ),
            owned_by_user=True,  # created by crmsync acting as the mailbox's CRM user
        )
        create_action = CreateInCrm(
            table=self.fmap.table,
            record_id=record_id,
            values=create,
            then_update=later,
            fitted=projection.fitted,
            reason=reason,
        )
        stamp = self.stamp(present, record_id, reason)
        write_link = WriteLink(link=link, outlook_from_write=bool(stamp), crm_from_write=True, reason=reason)
        return [create_action, *stamp, write_link]

    def stamp(self, present: _Present, record_id: uuid.UUID, reason: str) -> list[Action]:
        """Stamp the record id on an Outlook item that does not carry it yet (before the link write)."""
        if present.crm_id == record_id or _unstampable(present.item):
            return []
        return [StampOutlook(item_id=present.item_id, crm_id=record_id, reason=reason)]

    def split_for_create(
        self, values: Mapping[str, CrmValue]
    ) -> tuple[dict[str, CrmValue], dict[str, CrmValue]]:
        """A unit with any column not valid for create is written, whole, by the follow-up update."""
        create: dict[str, CrmValue] = {}
        later: dict[str, CrmValue] = {}
        for members in self.fmap.units().values():
            target = create if all(self.fmap.mapping(column).on_create for column in members) else later
            target.update({column: values[column] for column in members if column in values})
        return create, later

    def merge(
        self,
        present: _Present,
        crm: CrmState,
        crm_values: dict[str, CrmValue],
        base: Mapping[str, FieldBase],
        why: str,
        *,
        stamp: bool,
    ) -> list[Action]:
        item = present.item
        projection = self.fmap.project(item)
        units = self.fmap.units()
        result = merge_fields(
            outlook=projection.values,
            crm=crm_values,
            base=base,
            units=units,
            directions=self.fmap.directions(self.policy.directions),
            tie_break=self.policy.tie_break,
        )
        actions: list[Action] = [
            Conflict(column=c.column, winner=c.winner, rule=c.rule, reason=f"{why}: both changed {c.column}")
            for c in result.conflicts
        ]
        new_item = self.fmap.apply(item, result.to_outlook)
        outlook_written = new_item != item
        new_projection = self.fmap.project(new_item).values if outlook_written else projection.values
        new_crm = crm_values | result.to_crm
        if result.to_crm:
            fitted = tuple(note for note in projection.fitted if note.column in result.to_crm)
            actions.append(
                UpdateCrm(
                    table=self.fmap.table,
                    record_id=crm.record_id,
                    values=result.to_crm,
                    if_match=crm.etag,
                    fitted=fitted,
                    reason=f"{why} -> update CRM",
                )
            )
        if outlook_written:
            actions.append(
                UpdateOutlook(
                    item_id=present.item_id,
                    item=new_item,
                    columns=tuple(sorted(result.to_outlook)),
                    if_match=present.change_key,
                    reason=f"{why} -> update Outlook",
                )
            )
        stamps = self.stamp(present, crm.record_id, why) if stamp else []
        link = Link(
            outlook_id=present.item_id,
            crm_id=crm.record_id,
            outlook_change_key=present.change_key,
            crm_etag=crm.etag,
            outlook_hash=content_hash(new_item),
            crm_hash=crm_content_hash(self.fmap, new_crm),
            synced_fields=unit_fingerprints(new_projection, new_crm, units),
            owned_by_user=crm.owned_by_user,
        )
        from_outlook = outlook_written or bool(stamps)
        actions += stamps
        actions.append(
            WriteLink(
                link=link, outlook_from_write=from_outlook, crm_from_write=bool(result.to_crm), reason=why
            )
        )
        return actions


# --- the mass-delete brake ---------------------------------------------------------------------


class MassDeleteRefusedError(RuntimeError):
    """A plan would delete more of a mailbox's linked items than the configured ratio allows."""

    def __init__(self, linked_count: int, deletes: int, ratio: float) -> None:
        super().__init__(
            f"refusing to delete {deletes} of {linked_count} linked items (limit {ratio:.0%}); "
            "resync the mailbox or raise CRMSYNC_MASS_DELETE_RATIO if this is intended"
        )
        self.linked_count = linked_count
        self.deletes = deletes
        self.ratio = ratio


def count_deletes(actions: Iterable[Action]) -> int:
    """Deletes of actual items (unlinking keeps both copies and does not count)."""
    return sum(1 for action in actions if isinstance(action, DeleteInCrm | DeleteInOutlook))


def check_mass_delete(linked_count: int, deletes: int, ratio: float, *, minimum: int = 5) -> None:
    """Refuse (raise :class:`MassDeleteRefusedError`) a plan that deletes more than ``ratio`` of the
    linked items. Fewer than ``minimum`` deletes always pass, so a small mailbox can empty a folder.

    The brake vdirsyncer applies when a side suddenly looks empty: a lost delta token, a moved
    folder or a wrong filter must not wipe a user's CRM records.
    """
    if deletes >= minimum and deletes > ratio * linked_count:
        raise MassDeleteRefusedError(linked_count, deletes, ratio)
