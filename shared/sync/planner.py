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

The delete rules - what a delete, or an untracking, on one side does to the other - are
:mod:`shared.sync.planner_deletes`'s.

A link write lost after crmsync's CRM write (a crash, a failed storage call) leaves the record
changed since the link; crmsync's own last write for the mailbox (``CrmState.synced_last``) is no
CRM change where it copied the item: there the record is the base, and the item's edits since win
(the tie-break would put the older value back on both sides). Where the item did not change, the
link's base stands, so a Dynamics edit that write's lost Outlook half was carrying still flows to
Outlook (:func:`~shared.sync.merge.base_after_own_write`).

The planner is the only place where sync decisions are taken. What needs I/O to know - a message
moved to another folder, another mailbox still tracking a CRM email, an appointment that left the
calendar window, email tracking's verdict, regarding and attachments - is read before planning and
passed in as :class:`~shared.sync.plan.PlanFacts`. The types live in :mod:`shared.sync.plan`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.domain.bases import FieldBase
from shared.domain.model import FieldDirection, ItemKind, content_hash
from shared.sync.fieldmaps import FieldMap, crm_content_hash, crm_record_id, field_map, natural_key
from shared.sync.fieldmaps.base import FLOWS_TO_OUTLOOK, CrmValue, canonical_crm_value
from shared.sync.merge import base_after_own_write, merge_fields, unit_fingerprints
from shared.sync.plan import (
    SECURED_SKIPPED,
    SECURED_UNREADABLE,
    Action,
    Conflict,
    CreateInCrm,
    CreateInOutlook,
    CrmState,
    DropLink,
    GoneReason,
    Link,
    OutlookState,
    PlanFacts,
    PresentItem,
    SecuredField,
    Skip,
    SyncPolicy,
    UpdateCrm,
    UpdateOutlook,
    WriteLink,
)
from shared.sync.planner_deletes import crm_gone, outlook_gone, tombstoned
from shared.sync.planner_email import with_tracking

NO_FACTS = PlanFacts()


def plan_item(
    kind: ItemKind,
    *,
    mailbox_id: str,
    outlook: OutlookState | None,
    link: Link | None,
    crm: CrmState | None,
    policy: SyncPolicy,
    now: dt.datetime,
    facts: PlanFacts = NO_FACTS,
) -> list[Action]:
    """Plan one item.

    Look the link up by either side, as vdirsyncer's status does: by the Outlook id, else by the CRM
    id the item maps to (its stamp or deterministic id), so a second copy of a message in the same
    mailbox finds the first one's link and is skipped instead of fighting over the record.
    ``outlook=None``: the mailbox has no such item (a CRM record routed to it by its filter).
    ``crm=None``: the CRM side was not read (an unlinked Outlook item: create, i.e. upsert, under the
    deterministic id). With a link, both sides' states are required (a missing item is a state
    with ``gone`` / ``values=None``). ``facts``: what was read for this item before planning.
    """
    fmap = field_map(kind, facts.crm_time_zone)
    if link is not None and outlook is not None and outlook.item_id != link.outlook_id:
        # The record is linked to another item of this mailbox: a second copy of one message or
        # meeting (a message sent to oneself sits in Sent Items and in the Inbox) is tracked once.
        return [Skip(reason="another Outlook item of this mailbox is linked to the same CRM record")]
    present = None
    if outlook is not None and outlook.gone is None and outlook.item is not None:
        present = PresentItem(
            outlook.item_id, outlook.change_key, outlook.item, outlook.crm_id, outlook.categories
        )
        if why := fmap.skip_reason(present.item):
            return [Skip(reason=why)]
    crm_values = (
        _canonical(fmap, crm.values, policy.unreadable)
        if crm is not None and crm.values is not None
        else None
    )
    planner = ItemPlanner(fmap, kind, mailbox_id, policy, now, facts)
    if (
        facts.attendee_copy
        and present is not None
        and crm is not None
        and crm_values is not None
        and (link is None or not link.crm_deleted)
    ):
        # An invitee's copy of a meeting the organizer's record holds: the organizer owns the
        # meeting (Exchange keeps this copy up to date), so the copy is linked and followed, and
        # neither side is written from the other.
        return planner.follow(link, present, crm, crm_values)
    if link is None:
        return with_tracking(
            present,
            None,
            planner.unlinked(outlook, present, crm, crm_values),
            facts,
            crm=crm,
            tie_break=policy.tie_break,
        )
    if outlook is None or crm is None:
        raise ValueError("a linked item needs both sides' state to be planned")
    if outlook.gone is GoneReason.DELETED and facts.moved_away:
        # Removed from this folder but alive in another: the destination folder's run syncs it.
        return [Skip(reason="moved to another folder")]
    if outlook.gone is not None and facts.outside_window:
        # calendarView delta reports an event that left the window as removed; it was not deleted.
        return [Skip(reason="left the calendar window")]
    return with_tracking(
        present,
        link,
        planner.linked(link, outlook, present, crm, crm_values),
        facts,
        crm=crm,
        tie_break=policy.tie_break,
    )


def _canonical(
    fmap: FieldMap[Any], values: Mapping[str, object], unreadable: frozenset[str] = frozenset()
) -> dict[str, CrmValue]:
    """The mapped columns the CRM side reported; a column not read (a party list) stays absent, and
    so does a secured column the user may not read: Dataverse answers null for it, which is no value."""
    return {
        column: canonical_crm_value(values[column])
        for column in fmap.columns
        if column in values and column not in unreadable
    }


@dataclass(frozen=True, slots=True)
class ItemPlanner:
    """One item's planning: the cases of :func:`plan_item` (the delete rules in
    :mod:`shared.sync.planner_deletes`) and the actions they write."""

    fmap: FieldMap[Any]
    kind: ItemKind
    mailbox_id: str
    policy: SyncPolicy
    now: dt.datetime
    facts: PlanFacts

    # -- no link yet ---------------------------------------------------------------------------

    def unlinked(
        self,
        outlook: OutlookState | None,
        present: PresentItem | None,
        crm: CrmState | None,
        crm_values: dict[str, CrmValue] | None,
    ) -> list[Action]:
        if present is not None and crm is not None and crm_values is not None:
            # Both copies exist but were never linked: another mailbox already synced this message
            # or meeting (deterministic id), or a crash came between the create and the link
            # write. Link them and merge with an empty base (a value beats no value) - unless
            # crmsync wrote the record last, for this mailbox: then it holds what this item was
            # when a run whose link write was lost synced it, the base that link would have kept,
            # and the item's changes since flow to the CRM instead of losing to the tie-break.
            base = self.synced_base(crm_values) if crm.synced_last else {}
            return self.merge(present, crm, crm_values, base, "linked existing copies")
        if present is not None:
            # New in Outlook, not in the CRM -> create it under its deterministic id.
            key = natural_key(self.mailbox_id, present.item_id, present.item)
            return self.create_in_crm(present, crm_record_id(self.kind, key), "new in Outlook")
        if outlook is None and crm is not None and crm_values is not None:
            # New in the CRM (routed here by the mailbox's filter), not in Outlook -> create it there.
            if why := self.fmap.crm_skip_reason(crm_values):
                return [Skip(reason=why)]
            item = self.fmap.item_from_crm(self.flowing_to_outlook(crm_values))
            projection = self.fmap.project(item).values
            link = Link(
                outlook_id="",
                crm_id=crm.record_id,
                outlook_change_key=None,
                crm_etag=crm.etag,
                outlook_hash=content_hash(item),
                crm_hash=crm_content_hash(self.fmap, crm_values),
                field_bases=unit_fingerprints(projection, crm_values, self.fmap.units()),
                owned_by_user=crm.owned_by_user,
            )
            return [
                CreateInOutlook(kind=self.kind, item=item, crm_id=crm.record_id, reason="new in the CRM"),
                WriteLink(link=link, outlook_from_write=True, reason="new in the CRM"),
            ]
        # Gone from Outlook and never linked, or absent everywhere: nothing to do.
        return []

    def directions(self) -> dict[str, FieldDirection]:
        return self.fmap.directions(self.policy.directions, self.policy.organization)

    def flowing_to_outlook(self, crm_values: Mapping[str, CrmValue]) -> dict[str, CrmValue]:
        """The CRM values a new Outlook item takes: those whose direction flows to Outlook (and the
        columns an Outlook item cannot do without)."""
        directions = self.directions()
        leader = {column: lead for lead, members in self.fmap.units().items() for column in members}
        return {
            column: value
            for column, value in crm_values.items()
            if directions[leader[column]] in FLOWS_TO_OUTLOOK or column in self.fmap.required_from_crm
        }

    # -- linked --------------------------------------------------------------------------------

    def linked(
        self,
        link: Link,
        outlook: OutlookState,
        present: PresentItem | None,
        crm: CrmState,
        crm_values: dict[str, CrmValue] | None,
    ) -> list[Action]:
        if link.crm_deleted:
            return tombstoned(self, link, present, crm, crm_values)
        if crm_values is None:
            if present is None:
                # Gone on both sides -> forget the link.
                return [DropLink(outlook_id=link.outlook_id, crm_id=link.crm_id, reason="gone on both sides")]
            return crm_gone(self, link, present)
        if present is None:
            return outlook_gone(self, link, outlook, crm, crm_values)
        if crm.synced_last and self.crm_changed(link, crm, crm_values):
            # crmsync wrote the record after this link, and that run's link write was lost: where
            # the item changed, the record holds it as it was then, which is the base, and the
            # item's changes since win; elsewhere the link's base stands (base_after_own_write).
            projection = self.fmap.project(present.item).values
            base = base_after_own_write(link.field_bases, projection, crm_values, self.fmap.units())
            return self.merge(present, crm, crm_values, base, "written by crmsync after the last link")
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
        return self.merge(present, crm, crm_values, link.field_bases, why)

    def follow(
        self, link: Link | None, present: PresentItem, crm: CrmState, crm_values: dict[str, CrmValue]
    ) -> list[Action]:
        """Link the copy to the record as both stand (see :func:`plan_item`)."""
        if (
            link is not None
            and not self.outlook_changed(link, present)
            and not self.crm_changed(link, crm, crm_values)
        ):
            return []
        projection = self.fmap.project(present.item).values
        followed = Link(
            outlook_id=present.item_id,
            crm_id=crm.record_id,
            outlook_change_key=present.change_key,
            crm_etag=crm.etag,
            outlook_hash=content_hash(present.item),
            crm_hash=crm_content_hash(self.fmap, crm_values),
            field_bases=unit_fingerprints(projection, crm_values, self.fmap.units()),
            owned_by_user=crm.owned_by_user,
        )
        reason = "an attendee's copy of the organizer's meeting"
        return [WriteLink(link=followed, reason=reason)]

    def outlook_changed(self, link: Link, present: PresentItem) -> bool:
        if present.change_key is not None and present.change_key == link.outlook_change_key:
            return False
        return content_hash(present.item) != link.outlook_hash

    def synced_base(self, crm_values: Mapping[str, CrmValue]) -> dict[str, FieldBase]:
        """The base when crmsync wrote the record last for this mailbox (``CrmState.synced_last``)
        and no link row says so: the record holds the item as crmsync last copied it."""
        return unit_fingerprints(crm_values, crm_values, self.fmap.units())

    def crm_changed(self, link: Link, crm: CrmState, crm_values: Mapping[str, CrmValue]) -> bool:
        if crm.etag is not None and crm.etag == link.crm_etag:
            return False
        return crm_content_hash(self.fmap, crm_values) != link.crm_hash

    # -- writes --------------------------------------------------------------------------------

    def create_in_crm(self, present: PresentItem, record_id: uuid.UUID, reason: str) -> list[Action]:
        projection = self.fmap.project(present.item)
        kept, notes = self.without_secured(
            projection.values, self.policy.uncreatable, record_id, creating=True
        )
        create, later = self.split_for_create(kept)
        link = Link(
            outlook_id=present.item_id,
            crm_id=record_id,
            outlook_change_key=present.change_key,
            crm_etag=None,
            outlook_hash=content_hash(present.item),
            crm_hash=crm_content_hash(self.fmap, projection.values),
            # the new record holds the projection, and null in every column not written
            field_bases=unit_fingerprints(
                projection.values, {c: kept.get(c) for c in self.fmap.columns}, self.fmap.units()
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
        # No stamp on the Outlook item: the record id is deterministic, so a lost link is found
        # again from the item itself (no Graph write, and no echo notification for it).
        return [create_action, *notes, WriteLink(link=link, crm_from_write=True, reason=reason)]

    def without_secured(
        self,
        values: Mapping[str, CrmValue],
        refused: frozenset[str],
        record_id: uuid.UUID,
        *,
        creating: bool = False,
    ) -> tuple[dict[str, CrmValue], list[Action]]:
        """``values`` without the units holding a secured column the user may not write (a unit is
        written whole or not at all), and an audit note per such column that had something to write
        (a create may leave a secured column null without the create permission)."""
        kept = dict(values)
        notes: list[Action] = []
        for members in self.fmap.units().values():
            secured = [
                column
                for column in members
                if column in refused and column in values and not (creating and values[column] is None)
            ]
            if not secured:
                continue
            for column in members:
                kept.pop(column, None)
            notes += [SecuredField(record_id=record_id, column=c, reason=SECURED_SKIPPED) for c in secured]
        return kept, notes

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
        present: PresentItem,
        crm: CrmState,
        crm_values: dict[str, CrmValue],
        base: Mapping[str, FieldBase],
        why: str,
    ) -> list[Action]:
        item = present.item
        projection = self.fmap.project(item)
        units = self.fmap.units()
        result = merge_fields(
            outlook=projection.values,
            crm=crm_values,
            base=base,
            units=units,
            directions=self.directions(),
            tie_break=self.policy.tie_break,
        )
        to_crm, skipped = self.without_secured(result.to_crm, self.policy.unwritable, crm.record_id)
        actions: list[Action] = [
            Conflict(column=c.column, winner=c.winner, rule=c.rule, reason=f"{why}: both changed {c.column}")
            for c in result.conflicts
        ]
        actions += skipped
        actions += self.kept_unreadable(projection.values, crm)
        new_item = self.fmap.apply(item, result.to_outlook)
        outlook_written = new_item != item
        new_projection = self.fmap.project(new_item).values if outlook_written else projection.values
        new_crm = crm_values | to_crm
        if to_crm:
            fitted = tuple(note for note in projection.fitted if note.column in to_crm)
            actions.append(
                UpdateCrm(
                    table=self.fmap.table,
                    record_id=crm.record_id,
                    values=to_crm,
                    if_match=crm.etag,
                    fitted=fitted,
                    merged_hash=crm_content_hash(self.fmap, {c: new_crm[c] for c in crm_values})
                    if outlook_written
                    else None,
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
        link = Link(
            outlook_id=present.item_id,
            crm_id=crm.record_id,
            outlook_change_key=present.change_key,
            crm_etag=crm.etag,
            outlook_hash=content_hash(new_item),
            crm_hash=crm_content_hash(self.fmap, new_crm),
            field_bases=unit_fingerprints(new_projection, new_crm, units),
            owned_by_user=crm.owned_by_user,
        )
        from_outlook = outlook_written
        actions.append(
            WriteLink(link=link, outlook_from_write=from_outlook, crm_from_write=bool(to_crm), reason=why)
        )
        return actions

    def kept_unreadable(self, outlook: Mapping[str, CrmValue], crm: CrmState) -> list[Action]:
        """A note per secured column the user may not read whose Outlook value Dynamics would have
        blanked (the CRM answered null): crmsync keeps it, and the audit says why."""
        raw = crm.values or {}
        return [
            SecuredField(record_id=crm.record_id, column=column, reason=SECURED_UNREADABLE)
            for column in sorted(self.policy.unreadable)
            if column in raw and raw[column] is None and outlook.get(column) is not None
        ]
