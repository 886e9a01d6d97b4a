"""How one CRM -> Outlook run (:class:`~shared.sync.crm_run.CrmToOutlookRun`) plans its records.

From the run's reads (:class:`~shared.sync.crm_run_reads.RunReads`), each record is planned with the
pure planner: a linked record against its Outlook item (a record that left the filter by
:func:`~shared.sync.planner_filter.plan_left_filter`, a CRM delete by the delete rules); a record
not held here and wanted here is created, unless its series brings it, an Outlook -> CRM create
made it, or an earlier run's create is found by its CRM id (then it is linked); items an earlier
run made for records deleted since take the delete rules.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.crm.port import CrmQueryPort
from shared.domain.model import Appointment, EventKind, ItemKind, OutlookItem
from shared.outlook.from_crm import CrmOriginWriter
from shared.store.ports import Store, SyncStateStore
from shared.sync.adoption import attendee_copy
from shared.sync.applier import ItemPlan
from shared.sync.crm_deleted_meanwhile import find_orphans, plan_orphans
from shared.sync.crm_invites import created_before, with_values
from shared.sync.crm_reads import read_crm_states
from shared.sync.crm_run_reads import RunReads
from shared.sync.links import as_written, created_from_outlook
from shared.sync.plan import Action, CrmState, DropLink, Link, OutlookState, PlanFacts
from shared.sync.planner import plan_item
from shared.sync.planner_filter import plan_left_filter
from shared.sync.series_to_outlook import SeriesToOutlook, series_deleting


@dataclass(slots=True)
class RunPlan:
    """A run's plans, and what the run finishes or clears once they are applied."""

    plans: list[ItemPlan] = field(default_factory=list)
    new_ids: list[uuid.UUID] = field(default_factory=list)  # created (or found and linked) here
    unheld: list[uuid.UUID] = field(default_factory=list)  # changed, not linked, not wanted here
    ended: set[str] = field(default_factory=set)  # Outlook series whose instances the CRM deleted
    rewritten: list[str] = field(default_factory=list)  # deleted, the copy holds our update (as_written)
    orphans: list[OutlookItem] = field(default_factory=list)  # an earlier run's creates, deleted since
    lost: dict[uuid.UUID, OutlookItem] = field(default_factory=dict)  # an earlier run's creates, found
    series_writes: int = 0  # Outlook writes of the series new instances brought


async def plan_run(
    crm: CrmQueryPort,
    store: Store,
    origin: CrmOriginWriter,
    series: SeriesToOutlook,
    reads: RunReads,
    *,
    existing: Mapping[uuid.UUID, OutlookItem],
) -> RunPlan:
    """The linked records first: they name the unlinked records whose copies a crashed run may have
    left (the orphans). The new records last, once their series and earlier creates are known."""
    sync_state = store.sync_state
    plan = RunPlan()
    for record_id in [*reads.changed, *reads.deleted]:
        link = reads.held[record_id]
        if link is None:
            _sort_unlinked(reads, record_id, plan)
        elif not (link.crm_deleted and record_id not in reads.verdict.members):
            await _plan_copy(crm, sync_state, reads, plan, record_id=record_id, link=link)
        # else a tombstone: the CRM's delete was applied and the kept item stays untracked
    plan.orphans = await find_orphans(
        crm,
        sync_state,
        origin,
        mailbox_id=reads.mailbox.mailbox_id,
        kind=reads.kind,
        table=reads.table,
        unheld=plan.unheld,
    )
    plan.plans += plan_orphans(
        reads.kind,
        reads.mailbox.mailbox_id,
        plan.orphans,
        policy=reads.policy,
        now=reads.now,
        facts=reads.facts,
    )
    await _plan_new(store, origin, series, reads, plan, existing=existing)
    return plan


def _sort_unlinked(reads: RunReads, record_id: uuid.UUID, plan: RunPlan) -> None:
    """A record not linked here is created only where it is wanted and owned (a meeting in its
    organizer's mailbox); one not wanted is noted, a crashed run may have left its copy."""
    if record_id in reads.deleted:
        return  # not held here: the delete reaches no copy
    if record_id not in reads.verdict.members:
        plan.unheld.append(record_id)  # not (or no longer) wanted here, or gone
        return
    if reads.states[record_id].values is None:
        return  # deleted since routing: the delete reaches no copy
    if reads.kind is ItemKind.APPOINTMENT and record_id not in reads.verdict.organized:
        return  # an attendee's copy arrives by invitation from the organizer's mailbox
    plan.new_ids.append(record_id)


async def _plan_copy(
    crm: CrmQueryPort,
    sync_state: SyncStateStore,
    reads: RunReads,
    plan: RunPlan,
    *,
    record_id: uuid.UUID,
    link: Link,
) -> None:
    """A linked record against its Outlook item, as the planner decides."""
    item, created_from_crm = reads.copies[record_id]
    if item is None:
        if record_id in reads.deleted:
            reason = "deleted in the CRM; already gone from Outlook"
            plan.plans.append(
                ItemPlan([DropLink(outlook_id=link.outlook_id, crm_id=link.crm_id, reason=reason)])
            )
        return  # gone from Outlook: the Outlook -> CRM run's delta decides
    outlook = OutlookState.from_outlook_item(item)
    if record_id in reads.deleted and item.item is not None:
        written = await as_written(
            sync_state, reads.mailbox.mailbox_id, reads.table, {record_id: (link, item.item)}
        )
        if record_id in written:  # an update of ours whose link write was lost, not an edit
            link = written[record_id]
            plan.rewritten.append(str(record_id))
    parties_read = reads.party_values.get(record_id, {})
    if parties_read:  # the organizer's event: the CRM's attendees are compared, and may flow
        reads.states[record_id] = with_values(reads.states[record_id], parties_read)
    members = await _members_with_instance(crm, reads, record_id, outlook)
    facts = dataclasses.replace(
        reads.facts, attendee_copy=attendee_copy(reads.mailbox.mailbox_id, item, record_id)
    )
    actions = _plan_linked(
        reads, link, outlook, record_id, members, created_from_crm=created_from_crm, facts=facts
    )
    if record_id in reads.deleted and (master := series_deleting(outlook.item, actions)):
        plan.ended.add(master)  # the series may be gone: see SeriesToOutlook.ended
    projection = reads.fmap.project(item.item).values if item.item is not None else {}
    # A party list is written whole: the CRM's own attendees, not the copy's, go with it.
    plan.plans.append(ItemPlan(actions, projection | parties_read))


async def _members_with_instance(
    crm: CrmQueryPort, reads: RunReads, record_id: uuid.UUID, outlook: OutlookState
) -> frozenset[uuid.UUID]:
    """The filter's members, and this record if its copy is a series' instance outside the filter:
    an instance belongs to its series, not to the filter (a Dynamics instance has no parties of its
    own), so its changes reach its occurrence, and only that one."""
    members = reads.verdict.members
    if record_id in reads.deleted or record_id in members or not _series_instance(outlook):
        return members
    reads.states |= await read_crm_states(crm, reads.mailbox, reads.kind, [record_id])
    return members | {record_id}


def _plan_linked(
    reads: RunReads,
    link: Link,
    outlook: OutlookState,
    record_id: uuid.UUID,
    members: frozenset[uuid.UUID],
    *,
    created_from_crm: bool,
    facts: PlanFacts,
) -> list[Action]:
    """A CRM delete and a member take the planner's rules; a record out of the filter the leaving rules."""
    if record_id in reads.deleted:
        crm = CrmState(record_id, None)
    elif record_id not in members or reads.states[record_id].values is None:
        return plan_left_filter(
            reads.kind, link=link, outlook=outlook, created_from_crm=created_from_crm, policy=reads.policy
        )
    else:
        crm = reads.states[record_id]
    return _planned(reads, outlook=outlook, link=link, crm=crm, facts=facts)


async def _plan_new(
    store: Store,
    origin: CrmOriginWriter,
    series: SeriesToOutlook,
    reads: RunReads,
    plan: RunPlan,
    *,
    existing: Mapping[uuid.UUID, OutlookItem],
) -> None:
    """Records not held here: created in Outlook, except those something else brings or made."""
    new_ids = plan.new_ids
    if reads.kind is ItemKind.APPOINTMENT and new_ids:
        # A series instance is never a one-off event: its series reaches Outlook as one.
        series_of = await series.instances_of(new_ids)
        plan.series_writes, one_off = await series.sync(set(series_of.values()))
        new_ids = [r for r in new_ids if r not in series_of or series_of[r] in one_off]
    # Made from an Outlook item whose link write was lost: the Outlook -> CRM run links it.
    from_outlook = await created_from_outlook(
        store.sync_state, reads.mailbox.mailbox_id, reads.table, new_ids
    )
    new_ids = [r for r in new_ids if r not in from_outlook]
    plan.lost = await created_before(
        store, reads.mailbox, reads.kind, origin, new_ids=new_ids, known=existing
    )
    found = {**existing, **plan.lost}  # items crmsync created whose link write was lost
    for record_id in new_ids:
        item = found.get(record_id)
        outlook = OutlookState.from_outlook_item(item) if item is not None else None
        actions = _planned(reads, outlook=outlook, link=None, crm=reads.states[record_id], facts=reads.facts)
        plan.plans.append(ItemPlan(actions, new_link=True))
    plan.new_ids = new_ids


def _planned(
    reads: RunReads, *, outlook: OutlookState | None, link: Link | None, crm: CrmState, facts: PlanFacts
) -> list[Action]:
    """The pure planner, with this run's mailbox, field rules and time."""
    return plan_item(
        reads.kind,
        mailbox_id=reads.mailbox.mailbox_id,
        outlook=outlook,
        link=link,
        crm=crm,
        policy=reads.policy,
        now=reads.now,
        facts=facts,
    )


def _series_instance(outlook: OutlookState) -> bool:
    """An occurrence or exception of an Outlook series: it follows its series, not the filter."""
    item = outlook.item
    return isinstance(item, Appointment) and item.event_kind in {EventKind.OCCURRENCE, EventKind.EXCEPTION}
