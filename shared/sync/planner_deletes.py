"""The planner's delete rules: what a delete (or an untracking) on one side does to the other.

Kept apart from :mod:`shared.sync.planner`, which calls them for a linked item one side no longer
holds: they are one documented policy of their own, pure like the rest of the planner.

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
- A CRM delete stands: an Outlook item the delete policy keeps becomes untracked, as Dynamics
  untracks it ("the item is no longer tracked"). Its link row stays as a tombstone, so neither a
  later full read nor a later edit of the item in Outlook creates the record again (Dynamics never
  re-tracks an item on its own either); the tombstone goes when the item is deleted in Outlook.
  A message is untracked by its category instead (the user may track it again).

Policy ``unlink`` never deletes anything: gone on one side only removes the link (a CRM delete
leaves a tombstone, as above).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared.domain.model import Appointment, Contact, ItemKind, Task, TaskStatus, content_hash
from shared.sync.fieldmaps.base import CrmValue, crm_content_hash, parse_utc
from shared.sync.merge import Side
from shared.sync.plan import (
    Action,
    CrmState,
    DeleteInCrm,
    DeleteInOutlook,
    DeletePolicy,
    DropLink,
    GoneReason,
    Link,
    NeutralContent,
    OutlookState,
    PresentItem,
    Skip,
    UnlinkOnly,
)
from shared.sync.planner_email import untrack_message

if TYPE_CHECKING:
    from shared.sync.planner import ItemPlanner


def tombstoned(
    planner: ItemPlanner,
    link: Link,
    present: PresentItem | None,
    crm: CrmState,
    crm_values: dict[str, CrmValue] | None,
) -> list[Action]:
    """The CRM's delete was applied and the Outlook item kept, untracked (see the module docstring)."""
    if present is None:
        # The kept item is gone too -> forget the tombstone (the CRM record is not touched).
        return [DropLink(outlook_id=link.outlook_id, crm_id=link.crm_id, reason="untracked item gone")]
    if crm_values is None:
        # Read again (a full read, an edit in Outlook): the CRM's delete stands.
        return [Skip(reason="deleted in the CRM; the Outlook item is kept, no longer synced")]
    # The record exists again (restored under its id): link the two copies afresh.
    return planner.merge(present, crm, crm_values, {}, "the CRM record deleted before exists again")


def outlook_gone(
    planner: ItemPlanner, link: Link, outlook: OutlookState, crm: CrmState, crm_values: Mapping[str, CrmValue]
) -> list[Action]:
    untracked = outlook.gone is GoneReason.UNTRACKED
    verb = "untracked" if untracked else "deleted"
    changed = planner.crm_changed(link, crm, crm_values)
    kept = None
    if changed and not crm.synced_last:
        # Gone from Outlook, but the CRM record changed since the last sync (not by crmsync's
        # own write of this item) -> keep it, unlink.
        kept = f"{verb} in Outlook but changed in the CRM since last sync: CRM record kept"
    elif changed and planner.facts.merge_intent == crm_content_hash(planner.fmap, crm_values):
        # crmsync's own write was a merge whose Outlook and link writes were lost: the record holds
        # CRM changes the item never received, a change in the CRM since the last sync -> kept.
        kept = f"{verb} in Outlook; the CRM holds changes Outlook never received: CRM record kept"
    if kept is not None:
        return [UnlinkOnly(outlook_id=link.outlook_id, crm_id=link.crm_id, kept=Side.CRM, reason=kept)]
    if planner.kind is ItemKind.EMAIL and planner.facts.other_mailbox_holds:
        # One CRM email per message across mailboxes: another mailbox still tracks it -> kept.
        reason = f"{verb} in Outlook; another mailbox still tracks this CRM email: kept"
        return [UnlinkOnly(outlook_id=link.outlook_id, crm_id=link.crm_id, kept=Side.CRM, reason=reason)]
    if _deletes_crm_record(planner, untracked, crm.owned_by_user, crm_values):
        # Gone from Outlook, CRM unchanged, and the delete policy says the CRM copy goes too.
        reason = f"{verb} in Outlook; the user owns the CRM record"
        return [
            DeleteInCrm(table=planner.fmap.table, record_id=link.crm_id, if_match=crm.etag, reason=reason),
            DropLink(outlook_id=link.outlook_id, crm_id=link.crm_id, reason=reason),
        ]
    reason = f"{verb} in Outlook; the delete policy keeps the CRM record"
    return [UnlinkOnly(outlook_id=link.outlook_id, crm_id=link.crm_id, kept=Side.CRM, reason=reason)]


def _deletes_crm_record(
    planner: ItemPlanner, untracked: bool, owned: bool, crm_values: Mapping[str, CrmValue]
) -> bool:
    if planner.policy.delete_policy is DeletePolicy.UNLINK or not owned:
        return False
    if untracked:
        return planner.kind is not ItemKind.APPOINTMENT or not _is_over(
            planner, crm_values.get("scheduledend")
        )
    return planner.kind in (ItemKind.APPOINTMENT, ItemKind.TASK)


def _is_over(planner: ItemPlanner, end: CrmValue) -> bool:
    ended = parse_utc(end) if isinstance(end, str) else None
    return ended is not None and ended < planner.now


def crm_gone(planner: ItemPlanner, link: Link, present: PresentItem) -> list[Action]:
    item = present.item
    if planner.kind is ItemKind.EMAIL:
        # Deleting a CRM email never touches the mailbox, and the CRM's deletion stands.
        reason = "deleted in the CRM; the message stays in Outlook"
        return [
            *untrack_message(present.item_id, present.categories, planner.policy, reason),
            UnlinkOnly(outlook_id=link.outlook_id, crm_id=link.crm_id, kept=Side.OUTLOOK, reason=reason),
        ]
    if planner.outlook_changed(link, present):
        # Deleted in the CRM but changed in Outlook since the last sync -> create it again.
        return planner.create_in_crm(present, link.crm_id, "deleted in the CRM but changed in Outlook since")
    if _deletes_outlook_item(planner, link, item):
        reason = "deleted in the CRM; the delete policy removes the Outlook copy"
        return [
            DeleteInOutlook(item_id=link.outlook_id, reason=reason),
            DropLink(outlook_id=link.outlook_id, crm_id=link.crm_id, reason=reason),
        ]
    reason = "deleted in the CRM; the delete policy keeps the Outlook item, untracked"
    tombstone = dataclasses.replace(
        link,
        outlook_change_key=present.change_key,
        outlook_hash=content_hash(item),
        crm_etag=None,
        crm_deleted=True,
    )
    return [
        UnlinkOnly(
            outlook_id=link.outlook_id,
            crm_id=link.crm_id,
            kept=Side.OUTLOOK,
            reason=reason,
            tombstone=tombstone,
        )
    ]


def _deletes_outlook_item(planner: ItemPlanner, link: Link, item: NeutralContent) -> bool:
    if planner.policy.delete_policy is DeletePolicy.UNLINK:
        return False
    if isinstance(item, Contact):
        return not link.owned_by_user
    if isinstance(item, Appointment):
        return link.owned_by_user and item.end >= planner.now
    if isinstance(item, Task):
        return item.status is not TaskStatus.COMPLETED
    return False
