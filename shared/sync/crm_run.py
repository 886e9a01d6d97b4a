"""The CRM -> Outlook run: routed CRM records into one mailbox, under the mailbox lease.

For a :class:`~shared.store.crm_jobs.CrmWork` naming a mailbox, a table and record ids:

1. takes the mailbox lease (the same one the Outlook -> CRM job takes: one synchronizing instance
   per mailbox), waiting a few seconds while another run holds it: a run that went back on the
   queue at once came round behind all the CRM work queued, and with Outlook busy it starved;
2. checks the CRM user's "Sync to Outlook" privilege (``prvSyncToOutlook``, RetrieveUserPrivileges):
   without it the mailbox only tracks mail, nothing is written to Outlook, the links are kept, and
   the reason is recorded for ``crmsync status`` and audited per record (``crmsync audit``;
   :mod:`shared.sync.crm_privilege`);
3. evaluates the user's synchronization filter on the changed ids, by Dataverse, as the user
   (:mod:`shared.sync.crm_filter`), and reads the members as the user;
4. plans each record with the pure planner: a member the mailbox does not hold -> ``outlook=None``
   (created, carrying its CRM id; a meeting only in its organizer's mailbox - the attendees get
   Exchange's invitations, see :func:`~shared.sync.crm_invites.invite`); a linked member -> the linked
   Outlook item read from Graph (a meeting the user organizes with its party rows, so attendees
   changed in Dynamics reach the event; an attendee's copy is only followed); a linked record
   that left the filter -> :func:`~shared.sync.planner_filter.plan_left_filter`; a CRM delete -> the
   planner's delete rules;
5. records its intent to create (:meth:`~shared.store.ports.SyncStateStore.note_creates`), then
   applies every plan with the one :class:`~shared.sync.applier.Applier` (Outlook writes, then link
   rows, then audit) and clears the intents whose links were written: a run that died in between
   leaves the intent, and the next run for the record links the item it finds by its CRM id
   instead of creating it again. The link row records the content hashes, so the Outlook -> CRM job
   seeing the item crmsync just wrote recognises its own echo and writes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from msgraph.graph_service_client import GraphServiceClient

from shared import telemetry
from shared.crm.port import CrmQueryPort
from shared.domain.model import (
    Appointment,
    EventKind,
    ItemKind,
    OutlookItem,
    Task,
)
from shared.outlook.claim import ClaimGuard
from shared.outlook.from_crm import CrmOriginWriter
from shared.outlook.side import GraphOutlookSide
from shared.outlook.writers import OutlookWriter
from shared.store.crm_jobs import CrmWork
from shared.store.ports import Store
from shared.store.records import Mailbox, utc_now
from shared.sync import latency
from shared.sync.adoption import attendee_copy
from shared.sync.applier import AppliedItem, Applier, ItemPlan
from shared.sync.claims import stop_if_taken_over
from shared.sync.concurrency import bounded_gather
from shared.sync.crm_changes import TABLES
from shared.sync.crm_deleted_meanwhile import deleted_meanwhile, deleted_since, find_orphans, plan_orphans
from shared.sync.crm_filter import evaluate
from shared.sync.crm_invites import created_before, has_attendees, invite, party_values_of, with_values
from shared.sync.crm_privilege import clear_refusal, may_sync_to_outlook, record_refusal
from shared.sync.crm_reads import crm_time_zone, read_crm_states
from shared.sync.field_rules import field_rules
from shared.sync.fieldmaps import field_map
from shared.sync.lease import LEASE_POLL_SECONDS, LeaseKeeper, LeaseWaiters, acquire
from shared.sync.links import (
    as_written,
    clear_updates,
    created_from_outlook,
    from_stored_link,
    note_updates,
)
from shared.sync.parties import PartyResolver
from shared.sync.plan import (
    Action,
    CreateInOutlook,
    CrmState,
    DropLink,
    Link,
    NeutralContent,
    OutlookState,
    PlanFacts,
    SyncPolicy,
    WriteLink,
)
from shared.sync.planner import plan_item
from shared.sync.planner_filter import plan_left_filter
from shared.sync.policies import kind_enabled
from shared.sync.run import JobOptions
from shared.sync.series_to_outlook import SeriesToOutlook, series_deleting
from shared.sync.user_reads import user_reads

logger = logging.getLogger(__name__)

# How long a run waits for a held mailbox lease before it goes back on the queue: long enough to
# take the lease in a gap between Outlook -> CRM jobs, short enough not to hold the worker's
# message slots (routing waits for them) through a long Outlook -> CRM run.
LEASE_WAIT_SECONDS = 3.0


class CrmRunOutcome(enum.StrEnum):
    COMPLETED = "completed"
    MAILBOX_DISABLED = "mailbox_disabled"
    KIND_DISABLED = "kind_disabled"
    NO_PRIVILEGE = "no_sync_to_outlook_privilege"


@dataclass(frozen=True, slots=True)
class CrmRunReport:
    mailbox_id: str
    table: str
    outcome: CrmRunOutcome
    records: int = 0
    outlook_writes: int = 0
    unlinked: int = 0
    failed: int = 0  # plans a CRM error stopped (not synced: the record's next report runs again)


def resource_of(table: str) -> str:
    """The sync-state resource under which a mailbox's CRM -> Outlook errors are recorded."""
    return f"crm:{table}"


class CrmToOutlookRun:
    """Runs CRM -> Outlook work for one mailbox at a time (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        crm: CrmQueryPort,
        graph: GraphServiceClient,
        options: JobOptions | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        owner: str | None = None,
        claims: ClaimGuard | None = None,
        waiters: LeaseWaiters | None = None,
    ) -> None:
        self._waiters = waiters or LeaseWaiters()
        self._store = store
        self._claims = claims
        self._crm = crm
        self._graph = graph
        self._writer = OutlookWriter(graph)
        self._options = options or JobOptions()
        self._clock = clock
        self._owner = owner or f"crm-worker:{uuid.uuid4().hex}"

    @property
    def crm(self) -> CrmQueryPort:
        return self._crm

    async def run(
        self, work: CrmWork, *, existing: Mapping[uuid.UUID, OutlookItem] | None = None
    ) -> CrmRunReport:
        """Sync the work's records into its mailbox; ``LeaseHeld`` when another run holds it.
        ``existing``: Outlook items crmsync created earlier, by CRM id (a fill's
        :meth:`~shared.outlook.from_crm.CrmOriginWriter.created_items`): an unlinked record found
        there is linked to that item, not created again (its link write was lost)."""
        if work.mailbox_id is None:
            raise ValueError("a CRM -> Outlook run needs a mailbox (route the work first)")
        kind = TABLES[work.table]
        mailbox = await self._store.registry.get_mailbox(work.mailbox_id)
        if not mailbox.enabled:
            return CrmRunReport(mailbox.mailbox_id, work.table, CrmRunOutcome.MAILBOX_DISABLED)
        if not kind_enabled(mailbox.settings, kind):
            return CrmRunReport(mailbox.mailbox_id, work.table, CrmRunOutcome.KIND_DISABLED)
        if await stop_if_taken_over(self._store, self._claims, mailbox.mailbox_id, resource_of(work.table)):
            return CrmRunReport(mailbox.mailbox_id, work.table, CrmRunOutcome.MAILBOX_DISABLED)
        state = self._store.sync_state
        seconds = self._options.lease_seconds
        waiting = min(seconds + LEASE_POLL_SECONDS, LEASE_WAIT_SECONDS)
        deadline = time.monotonic() + waiting
        # This worker's runs of the mailbox take turns first; an Outlook -> CRM job holding it yields.
        async with self._waiters.turn(mailbox.mailbox_id, wait=waiting, to_outlook=True):
            left = max(0.0, deadline - time.monotonic())  # another worker's run may hold it still
            acquired = await acquire(state, mailbox.mailbox_id, self._owner, seconds, wait=left)
            lease = LeaseKeeper(state, acquired, seconds, clock=self._clock)
            lease.start()  # renewed while the run works; checked before its writes
            try:
                return await self._leased(mailbox, kind, work, existing or {}, lease)
            finally:
                await lease.release()

    async def _leased(
        self,
        mailbox: Mailbox,
        kind: ItemKind,
        work: CrmWork,
        existing: Mapping[uuid.UUID, OutlookItem],
        lease: LeaseKeeper,
    ) -> CrmRunReport:
        """The run once it holds the lease: the user's privilege, then the sync, timed."""
        state = self._store.sync_state
        resource = resource_of(work.table)
        if not await may_sync_to_outlook(self._crm, mailbox):
            await record_refusal(self._store, mailbox, kind, resource, [*work.changed, *work.deleted])
            logger.info("CRM -> Outlook skipped: the CRM user lacks Sync to Outlook")
            return CrmRunReport(mailbox.mailbox_id, work.table, CrmRunOutcome.NO_PRIVILEGE)
        await clear_refusal(state, mailbox.mailbox_id, resource)
        async with latency.measured(state, mailbox.mailbox_id, self._clock):
            with telemetry.sync_run(
                mailbox=mailbox.mailbox_id,
                reason="crm_change",
                enqueued_at=work.enqueued_at,
                parent=work.traceparent,
            ):
                return await self._sync(mailbox, kind, work, existing, lease)

    async def _sync(
        self,
        mailbox: Mailbox,
        kind: ItemKind,
        work: CrmWork,
        existing: Mapping[uuid.UUID, OutlookItem],
        lease: LeaseKeeper,
    ) -> CrmRunReport:
        table = work.table
        task_list = (
            await self._writer.default_task_list(mailbox.mailbox_id) if kind is ItemKind.TASK else None
        )
        origin = CrmOriginWriter(self._graph, mailbox.mailbox_id, task_list_id=task_list)
        side = GraphOutlookSide(self._writer, mailbox.mailbox_id, task_list_id=task_list, from_crm=origin)
        deleted = list(dict.fromkeys(work.deleted))
        changed = [record_id for record_id in dict.fromkeys(work.changed) if record_id not in deleted]
        caller = mailbox.crm_caller_object_id
        user_id = uuid.UUID(mailbox.crm_user_id)
        verdict = await evaluate(
            self._crm,
            table,
            user_id=user_id,
            caller=caller,
            ids=changed,
            replacement=mailbox.settings.filter_for(kind),
            read_filters=lambda: user_reads(self._crm).outlook_filters(table, user_id=user_id, caller=caller),
        )
        states = await read_crm_states(self._crm, mailbox, kind, sorted(verdict.members, key=str))
        policy = await field_rules(self._crm).policy(mailbox, kind)
        facts = PlanFacts(crm_time_zone=await crm_time_zone(self._crm, mailbox, kind))
        fmap = field_map(kind, facts.crm_time_zone)
        now = self._clock()
        organized = [r for r in changed if r in verdict.organized and states[r].values is not None]
        party_values = await party_values_of(self._crm, caller, organized)
        plans: list[ItemPlan] = []
        new_ids: list[uuid.UUID] = []
        ended: set[str] = set()  # Outlook series whose instances the CRM deleted
        unheld: list[uuid.UUID] = []  # changed, not linked here and not wanted here (or gone)
        rewritten: list[str] = []  # deleted records whose copy holds an update of ours (see as_written)
        state_store = self._store.sync_state
        # The link rows, then the linked Outlook items, read concurrently: one by one, a run of 200
        # records outlasted its lease (bench.chaos at 10,000 operations).
        rows = await bounded_gather(
            self._store.links.get_by_crm(mailbox.mailbox_id, table, str(record_id))
            for record_id in [*changed, *deleted]
        )
        held = {
            record_id: from_stored_link(row) if row is not None else None
            for record_id, row in zip([*changed, *deleted], rows, strict=True)
        }
        for record_id in await deleted_since(
            self._crm, table, changed, held=held, members=verdict.members, states=states
        ):
            changed.remove(record_id)
            deleted.append(record_id)
        reading = [
            (record_id, link)
            for record_id, link in held.items()
            if link is not None and not (link.crm_deleted and record_id not in verdict.members)
        ]
        read = await bounded_gather(
            origin.read(
                kind, link.outlook_id, origin=record_id not in deleted and record_id not in verdict.members
            )
            for record_id, link in reading
        )
        copies = {record_id: found for (record_id, _), found in zip(reading, read, strict=True)}
        for record_id in [*changed, *deleted]:
            link = held[record_id]
            if link is None and (record_id in deleted or record_id not in verdict.members):
                if record_id not in deleted:
                    unheld.append(record_id)
                continue  # not held here and not (or no longer) wanted here: nothing to do
            if link is not None and link.crm_deleted and record_id not in verdict.members:
                continue  # a tombstone: the CRM's delete was applied and the kept item stays untracked
            if link is None:
                crm = states[record_id]
                if crm.values is None:
                    continue  # deleted since routing: the delete reaches no copy
                if kind is ItemKind.APPOINTMENT and record_id not in verdict.organized:
                    continue  # an attendee's copy arrives by invitation from the organizer's mailbox
                new_ids.append(record_id)
                continue
            item, created_from_crm = copies[record_id]
            if item is None:
                if record_id in deleted:
                    reason = "deleted in the CRM; already gone from Outlook"
                    plans.append(
                        ItemPlan([DropLink(outlook_id=link.outlook_id, crm_id=link.crm_id, reason=reason)])
                    )
                continue  # gone from Outlook: the Outlook -> CRM run's delta decides
            outlook = OutlookState.from_outlook_item(item)
            if record_id in deleted and item.item is not None:
                written = await as_written(
                    state_store, mailbox.mailbox_id, table, {record_id: (link, item.item)}
                )
                if record_id in written:  # an update of ours whose link write was lost, not an edit
                    link = written[record_id]
                    rewritten.append(str(record_id))
            parties_read = party_values.get(record_id, {})
            if parties_read:  # the organizer's event: the CRM's attendees are compared, and may flow
                states[record_id] = with_values(states[record_id], parties_read)
            members = verdict.members
            if record_id not in deleted and record_id not in members and _series_instance(outlook):
                # An instance of a series belongs to its series, not to the filter (a Dynamics instance
                # has no parties of its own): its changes reach its occurrence, and only that one.
                states |= await read_crm_states(self._crm, mailbox, kind, [record_id])
                members = members | {record_id}
            actions = self._plan_linked(
                kind=kind,
                mailbox=mailbox,
                link=link,
                outlook=outlook,
                record_id=record_id,
                deleted=deleted,
                members=members,
                states=states,
                created_from_crm=created_from_crm,
                now=now,
                policy=policy,
                facts=dataclasses.replace(
                    facts, attendee_copy=attendee_copy(mailbox.mailbox_id, item, record_id)
                ),
            )
            if record_id in deleted and (master := series_deleting(outlook.item, actions)):
                ended.add(master)  # the series may be gone: see SeriesToOutlook.ended
            projection = fmap.project(item.item).values if item.item is not None else {}
            # A party list is written whole: the CRM's own attendees, not the copy's, go with it.
            plans.append(ItemPlan(actions, projection | parties_read))
        orphans = await find_orphans(
            self._crm,
            state_store,
            origin,
            mailbox_id=mailbox.mailbox_id,
            kind=kind,
            table=table,
            unheld=unheld,
        )
        plans += plan_orphans(kind, mailbox.mailbox_id, orphans, policy=policy, now=now, facts=facts)
        series_writes = 0
        series = SeriesToOutlook(
            crm=self._crm,
            graph=self._graph,
            store=self._store,
            mailbox=mailbox,
            fmap=fmap,
            time_zone=facts.crm_time_zone,
        )
        if kind is ItemKind.APPOINTMENT and new_ids:
            # A series instance is never a one-off event: its series reaches Outlook as one.
            series_of = await series.instances_of(new_ids)
            series_writes, one_off = await series.sync(set(series_of.values()))
            new_ids = [r for r in new_ids if r not in series_of or series_of[r] in one_off]
        # Made from an Outlook item whose link write was lost: the Outlook -> CRM run links it.
        from_outlook = await created_from_outlook(state_store, mailbox.mailbox_id, table, new_ids)
        new_ids = [r for r in new_ids if r not in from_outlook]
        lost = await created_before(self._store, mailbox, kind, origin, new_ids=new_ids, known=existing)
        existing = {**existing, **lost}
        for record_id in new_ids:
            found = existing.get(record_id)  # an item crmsync created whose link write was lost
            actions = plan_item(
                kind,
                mailbox_id=mailbox.mailbox_id,
                outlook=OutlookState.from_outlook_item(found) if found is not None else None,
                link=None,
                crm=states[record_id],
                policy=policy,
                now=now,
                facts=facts,
            )
            plans.append(ItemPlan(actions, new_link=True))
        if not plans:
            series_writes += await series.ended(ended)
            return CrmRunReport(
                mailbox.mailbox_id,
                table,
                CrmRunOutcome.COMPLETED,
                len(changed) + len(deleted),
                series_writes,
            )
        applier = Applier(
            crm=self._crm,
            links=self._store.links,
            audit=self._store.audit,
            mailbox=mailbox,
            kind=kind,
            resolver=PartyResolver(self._crm, caller),
            outlook=side,
        )
        creates = [a for plan in plans for a in plan.actions if isinstance(a, CreateInOutlook)]
        creating = {str(a.crm_id): _title(a.item) for a in creates}
        if creating:
            # The intent, before the Graph create: a crash before the link write leaves it, and the
            # next run for the record looks the item up by its CRM id instead of creating it again.
            await self._store.sync_state.note_creates(mailbox.mailbox_id, table, creating)
        updating = await note_updates(
            state_store, mailbox.mailbox_id, table, [plan.actions for plan in plans]
        )
        lease.check()  # a run that lost its mailbox writes nothing
        results = await applier.apply(plans)
        linked = {
            str(record_id)
            for plan, result in zip(plans, results, strict=True)
            if plan.new_link and isinstance(result, AppliedItem) and result.linked
            for record_id in _created_or_found(plan)
        }
        relinked = {
            str(record_id)
            for plan, result in zip(plans, results, strict=True)
            if isinstance(result, AppliedItem)
            for record_id in _created_or_found(plan)
        }
        done_updates = [i for i in updating if i in relinked] + [i for i in rewritten if i not in updating]
        await clear_updates(state_store, mailbox.mailbox_id, table, done_updates)
        done = sorted(i for i in linked if i in creating or uuid.UUID(i) in lost)  # intents recorded
        done += [str(item.crm_id) for item in orphans]  # removed by the delete rules (or kept, untracked)
        if done:
            await self._store.sync_state.clear_creates(mailbox.mailbox_id, table, done)
        series_writes += await series.ended(ended)
        applied = [r for r in results if isinstance(r, AppliedItem)]
        inviting = [r for r in new_ids if str(r) in linked and has_attendees(party_values.get(r, {}))]
        failed = len(results) - len(applied)
        if inviting:
            invited, not_invited = await invite(
                self._store,
                mailbox,
                kind,
                origin,
                applier=applier,
                record_ids=inviting,
                states=states,
                party_values=party_values,
                policy=policy,
                facts=facts,
                now=self._clock(),
            )
            series_writes += invited
            failed += not_invited
        report = CrmRunReport(
            mailbox.mailbox_id,
            table,
            CrmRunOutcome.COMPLETED,
            len(changed) + len(deleted),
            series_writes + sum(r.outlook_writes for r in applied),
            sum(1 for r in applied if r.unlinked),
            failed,
        )
        gone = await deleted_meanwhile(self._crm, table, [r for r in new_ids if str(r) in linked])
        if not gone:
            return report
        # Deleted while this run created them: the delete's routing found no link yet, so it was
        # routed to no mailbox. Linked now, they take the delete path here.
        logger.info("CRM -> Outlook: %d records deleted while their copies were made", len(gone))
        deletes = work.model_copy(update={"changed": (), "deleted": tuple(gone)})
        again = await self._sync(mailbox, kind, deletes, {}, lease)
        return dataclasses.replace(
            report,
            outlook_writes=report.outlook_writes + again.outlook_writes,
            unlinked=report.unlinked + again.unlinked,
            failed=report.failed + again.failed,
        )

    def _plan_linked(
        self,
        *,
        kind: ItemKind,
        mailbox: Mailbox,
        link: Link,
        outlook: OutlookState,
        record_id: uuid.UUID,
        deleted: list[uuid.UUID],
        members: frozenset[uuid.UUID],
        states: dict[uuid.UUID, CrmState],
        created_from_crm: bool,
        now: dt.datetime,
        policy: SyncPolicy,
        facts: PlanFacts,
    ) -> list[Action]:
        if record_id in deleted:
            crm = CrmState(record_id, None)
        elif record_id not in members or states[record_id].values is None:
            return plan_left_filter(
                kind, link=link, outlook=outlook, created_from_crm=created_from_crm, policy=policy
            )
        else:
            crm = states[record_id]
        return plan_item(
            kind,
            mailbox_id=mailbox.mailbox_id,
            outlook=outlook,
            link=link,
            crm=crm,
            policy=policy,
            now=now,
            facts=facts,
        )


def _title(item: NeutralContent) -> str:
    """What a To Do task is posted with (a crashed create is looked up by it); empty for others."""
    return (item.subject or "") if isinstance(item, Task) else ""


def _created_or_found(plan: ItemPlan) -> list[uuid.UUID]:
    """The records a plan created in Outlook or linked to an item found there (the fill's and a
    crashed run's creates): their intents are done once the link is written."""
    return [a.link.crm_id for a in plan.actions if isinstance(a, WriteLink)]


def _series_instance(outlook: OutlookState) -> bool:
    item = outlook.item
    return isinstance(item, Appointment) and item.event_kind in {EventKind.OCCURRENCE, EventKind.EXCEPTION}
