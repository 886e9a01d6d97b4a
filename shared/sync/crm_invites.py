"""Meetings a CRM -> Outlook run creates, and creates a crashed run left behind.

A meeting made in Dynamics is written to its organizer's calendar in two steps (:func:`invite`): the
event without attendees, then, once linked, its iCalUId to the record and the attendees (the
record's party rows, :func:`party_values_of`) to the event, so that by the time Exchange delivers the
invitations an attendee's copy finds the record. :func:`created_before` finds the Outlook items an
earlier run made before it died between the Graph create and the link write.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping

from shared.crm.port import CrmQueryPort
from shared.domain.model import ItemKind, OutlookItem, Participation
from shared.outlook.from_crm import CrmOriginWriter
from shared.store.ports import Store
from shared.store.records import Mailbox
from shared.sync.applier import AppliedItem, Applier, ItemPlan
from shared.sync.crm_changes import TABLES
from shared.sync.fieldmaps import field_map
from shared.sync.fieldmaps.base import CrmValue, parties
from shared.sync.links import from_stored_link
from shared.sync.plan import CrmState, OutlookState, PlanFacts, SyncPolicy
from shared.sync.planner import plan_item

TABLE_OF = {kind: table for table, kind in TABLES.items()}

_PARTY_COLUMNS = {
    Participation.ORGANIZER: "organizer",
    Participation.REQUIRED: "requiredattendees",
    Participation.OPTIONAL: "optionalattendees",
}


async def party_values_of(
    crm: CrmQueryPort, caller: str, record_ids: list[uuid.UUID]
) -> dict[uuid.UUID, dict[str, CrmValue]]:
    """The organizer and attendees of the meetings the user organizes, as the appointment map's
    party columns (:meth:`~shared.crm.port.CrmPort.party_addresses`: one request per 50 meetings;
    the series code compares a master's parties the same way)."""
    if not record_ids:
        return {}
    found = await crm.party_addresses(record_ids, caller=caller)
    return {
        record_id: {
            column: parties(role, (address for mask, address in found[record_id] if mask == role))
            for role, column in _PARTY_COLUMNS.items()
        }
        for record_id in record_ids
    }


def with_values(state: CrmState, values: Mapping[str, CrmValue]) -> CrmState:
    return dataclasses.replace(state, values={**(state.values or {}), **values})


def has_attendees(values: Mapping[str, CrmValue]) -> bool:
    return bool(values.get("requiredattendees") or values.get("optionalattendees"))


async def created_before(
    store: Store,
    mailbox: Mailbox,
    kind: ItemKind,
    origin: CrmOriginWriter,
    *,
    new_ids: list[uuid.UUID],
    known: Mapping[uuid.UUID, OutlookItem],
) -> dict[uuid.UUID, OutlookItem]:
    """Items an earlier run created for these unlinked records before it crashed (its create
    intent is still recorded): looked up by the CRM id they carry, so they are linked, not
    created twice. One storage read per run with new records; Graph is asked only after a crash."""
    if not new_ids:
        return {}
    pending = await store.sync_state.pending_creates(mailbox.mailbox_id, TABLE_OF[kind])
    found: dict[uuid.UUID, OutlookItem] = {}
    for record_id in new_ids:
        if str(record_id) not in pending or record_id in known:
            continue
        if kind is ItemKind.TASK:  # looked up by the title it was posted with (find_task)
            item = await origin.find_task(pending[str(record_id)], record_id)
        else:
            item = await origin.find(kind, record_id)
        if item is not None:
            found[record_id] = item
    return found


async def invite(
    store: Store,
    mailbox: Mailbox,
    kind: ItemKind,
    origin: CrmOriginWriter,
    *,
    applier: Applier,
    record_ids: list[uuid.UUID],
    states: Mapping[uuid.UUID, CrmState],
    party_values: Mapping[uuid.UUID, dict[str, CrmValue]],
    policy: SyncPolicy,
    facts: PlanFacts,
    now: dt.datetime,
) -> tuple[int, int]:
    """Meetings just created in the organizer's calendar get their attendees, as a second write:
    the plan first writes the event's iCalUId to the record (``globalobjectid``), then the
    attendees to the event (the applier's order: CRM, then Outlook), so when Exchange delivers
    the invitations an attendee's copy finds this record (:mod:`shared.sync.adoption`). A Graph
    read and write per such meeting. The Outlook writes, and the plans a CRM error stopped."""
    fmap = field_map(kind, facts.crm_time_zone)
    plans: list[ItemPlan] = []
    for record_id in record_ids:
        stored = await store.links.get_by_crm(mailbox.mailbox_id, TABLE_OF[kind], str(record_id))
        item = (await origin.read(kind, stored.outlook_id))[0] if stored is not None else None
        if stored is None or item is None or item.item is None:
            continue
        # The link holds the create's CRM side, without the party rows (unread then): the
        # record's etag is unchanged, so compare its content, which now has them.
        link = dataclasses.replace(from_stored_link(stored), crm_etag=None)
        actions = plan_item(
            kind,
            mailbox_id=mailbox.mailbox_id,
            outlook=OutlookState.from_outlook_item(item),
            link=link,
            crm=with_values(states[record_id], party_values[record_id]),
            policy=policy,
            now=now,
            facts=facts,
        )
        plans.append(ItemPlan(actions, fmap.project(item.item).values | party_values[record_id]))
    results = await applier.apply(plans) if plans else []
    applied = [r for r in results if isinstance(r, AppliedItem)]
    return sum(r.outlook_writes for r in applied), len(results) - len(applied)
