"""Link writes a crash lost, found again for an Outlook -> CRM page (:class:`~shared.sync.page.PageSync`).

A run that dies between a write and its link write leaves an item and a record no link joins; the
intent it recorded before the write still tells which belong together. Read here, a page's items
map to those records - linked, or taken through the delete rules - instead of creating a record
again or leaving one behind for the other direction to copy back:

- copies a CRM -> Outlook run created (:func:`lost_links`, :func:`orphaned`);
- records an Outlook -> CRM run created for items deleted since (:func:`unlisted_creates`,
  :func:`lost_creates`);
- copies a CRM -> Outlook update overwrote (:func:`as_written_copies`);
- records an Outlook -> CRM merge updated for items deleted since, whose Outlook half was lost
  (:func:`lost_merges`).

Kept apart from the page's ordinary preparation: each is a storage read, and Graph only after such
a crash.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import TYPE_CHECKING

from shared.domain.model import ItemKind, OutlookItem
from shared.store.ports import SyncStateStore
from shared.sync.fieldmaps import field_map
from shared.sync.links import as_written, crm_lost_link, crm_lost_links, lost_link, pending_merges
from shared.sync.plan import CrmState
from shared.sync.ports import OutlookReader

if TYPE_CHECKING:
    from shared.sync.page import Prepared, RunState

CRM_MADE = frozenset({ItemKind.CONTACT, ItemKind.APPOINTMENT, ItemKind.TASK})  # CRM -> Outlook kinds


async def lost_links(sync_state: SyncStateStore, run: RunState, prepared: list[Prepared]) -> list[Prepared]:
    """Unlinked items that are copies a CRM -> Outlook run made before it died between the Graph
    create and the link write (its create intent is still recorded): they map to the record
    they were made from, never to a new one. Such a copy is linked to its record (the planner
    merges the two), or, when the record was deleted meanwhile (its delete was routed by no
    link), takes the delete rules. A storage read per page with new items; Graph is asked (a
    lookup by CRM id per intent) only after such a crash."""
    fresh = {
        entry.item.item_id: entry
        for entry in prepared
        if entry.link is None and entry.outlook.item is not None and entry.outlook.gone is None
    }
    table = field_map(run.ref.kind).table
    if not fresh or run.find_created is None or run.ref.kind not in CRM_MADE:
        return prepared
    pending = await sync_state.pending_creates(run.mailbox.mailbox_id, table)
    found: dict[str, uuid.UUID] = {}
    for crm_id, title in pending.items():
        record_id = uuid.UUID(crm_id)
        item = await run.find_created(record_id, title=title)
        if item is not None and item.item_id in fresh:
            found[item.item_id] = record_id
    return [
        dataclasses.replace(entry, record_id=found[entry.item.item_id], from_crm=True)
        if entry.item.item_id in found
        else entry
        for entry in prepared
    ]


async def unlisted_creates(
    sync_state: SyncStateStore, reader: OutlookReader, run: RunState
) -> list[OutlookItem]:
    """At a round's end: the items an earlier run created records for before it died ahead of
    the link write, which this round did not list - deleted since (a delta reports no delete of
    an item it never listed), read by id, so their records take the delete rules
    (:func:`lost_creates`). One storage read per round, Graph only after such a crash."""
    if run.ref.kind not in CRM_MADE:
        return []
    table = field_map(run.ref.kind).table
    lost = await crm_lost_links(sync_state, run.mailbox.mailbox_id, table)
    unlisted = [i for i in lost if i not in run.seen and i not in run.parked_ids]
    if not unlisted:
        return []
    return await reader.read_items(
        run.mailbox.mailbox_id,
        run.ref.kind,
        unlisted,
        task_list_id=run.ref.task_list_id,
        mailbox_address=run.mailbox.upn,
    )


async def lost_creates(sync_state: SyncStateStore, run: RunState, prepared: list[Prepared]) -> list[Prepared]:
    """Items gone from Outlook that no link holds: nothing to do, unless an earlier run created
    their record and died before the link write (its intent still recorded, see
    :func:`~shared.sync.links.note_crm_creates`). Such an item's next delta may only say it was
    deleted, which tells no record: the intent does, and the item takes the delete rules as if
    the link had been written, instead of leaving its record behind (for a CRM -> Outlook run
    to copy it back). One storage read per page with such items."""
    if all(entry.record_id is not None for entry in prepared):
        return prepared
    table = field_map(run.ref.kind).table
    lost = await crm_lost_links(sync_state, run.mailbox.mailbox_id, table)
    found: list[Prepared] = []
    for entry in prepared:
        record_id = entry.record_id or lost.get(entry.item.item_id)
        if record_id is None:
            continue  # gone and never linked: nothing to do
        if entry.record_id is not None:
            found.append(entry)
            continue
        link = crm_lost_link(entry.item.item_id, record_id)
        found.append(
            dataclasses.replace(entry, link=link, record_id=record_id, own_link=True, lost_create=True)
        )
    return found


async def as_written_copies(
    sync_state: SyncStateStore, run: RunState, prepared: list[Prepared], states: dict[uuid.UUID, CrmState]
) -> list[Prepared]:
    """Copies of records deleted in the CRM holding what a CRM -> Outlook update wrote before
    its link write was lost get the link that write would have left (:func:`as_written`): not
    changed by the user, they take the delete rules instead of bringing the record back."""
    copies = {
        entry.record_id: (entry.link, entry.outlook.item)
        for entry in prepared
        if entry.own_link
        and entry.link is not None
        and entry.record_id is not None
        and entry.outlook.item is not None
        and entry.outlook.gone is None
        and entry.record_id in states
        and states[entry.record_id].values is None
    }
    table = field_map(run.ref.kind).table
    found = await as_written(sync_state, run.mailbox.mailbox_id, table, copies)
    return [
        dataclasses.replace(entry, link=found[entry.record_id], rewritten=True)
        if entry.record_id in found and entry.own_link
        else entry
        for entry in prepared
    ]


def orphaned(entry: Prepared, states: dict[uuid.UUID, CrmState]) -> Prepared:
    """A lost-link copy whose record is gone gets the link its create would have written, so the
    planner's delete rules apply to it (as to any copy whose record was deleted in the CRM)."""
    if not entry.from_crm or entry.record_id is None or entry.record_id not in states:
        return entry
    if states[entry.record_id].values is not None:
        return entry  # the record lives: linked as existing copies
    return dataclasses.replace(entry, link=lost_link(entry.item, entry.record_id), own_link=True)


async def lost_merges(
    sync_state: SyncStateStore, run: RunState, prepared: list[Prepared], states: dict[uuid.UUID, CrmState]
) -> list[Prepared]:
    """Linked items gone from Outlook whose record crmsync wrote last get the merge intent still
    recorded for it (:func:`~shared.sync.links.note_merges`) as a fact: without the item, only the
    intent tells a merge's CRM changes the item never received from the item's own values. One
    storage read per page with such items."""
    gone = {
        id(entry)
        for entry in prepared
        if entry.own_link
        and entry.outlook.gone is not None
        and entry.record_id in states
        and states[entry.record_id].synced_last
    }
    if not gone:
        return prepared
    table = field_map(run.ref.kind).table
    pending = await pending_merges(sync_state, run.mailbox.mailbox_id, table)
    return [
        dataclasses.replace(
            entry, facts=dataclasses.replace(entry.facts, merge_intent=pending[str(entry.record_id)])
        )
        if id(entry) in gone and str(entry.record_id) in pending
        else entry
        for entry in prepared
    ]
