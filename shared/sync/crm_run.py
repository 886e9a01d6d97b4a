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
   (:mod:`shared.sync.crm_filter`), and reads the members as the user, then the link rows and the
   linked Outlook items (:mod:`shared.sync.crm_run_reads`);
4. plans each record with the pure planner (:mod:`shared.sync.crm_run_plan`): a member the mailbox
   does not hold -> ``outlook=None`` (created, carrying its CRM id; a meeting only in its organizer's
   mailbox - the attendees get Exchange's invitations, see :func:`~shared.sync.crm_invites.invite`);
   a linked member -> the linked Outlook item read from Graph (a meeting the user organizes with
   its party rows, so attendees changed in Dynamics reach the event; an attendee's copy is only
   followed); a linked record that left the filter ->
   :func:`~shared.sync.planner_filter.plan_left_filter`; a CRM delete -> the planner's delete rules;
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from msgraph.graph_service_client import GraphServiceClient

from shared import telemetry
from shared.crm.errors import CrmError
from shared.crm.port import CrmQueryPort
from shared.domain.model import ItemKind, OutlookItem, Task
from shared.outlook.claim import ClaimGuard
from shared.outlook.from_crm import CrmOriginWriter
from shared.outlook.side import GraphOutlookSide
from shared.outlook.writers import OutlookWriter
from shared.store.crm_jobs import CrmWork
from shared.store.ports import Store
from shared.store.records import Mailbox, utc_now
from shared.sync import latency
from shared.sync.applier import AppliedItem, Applier, ItemPlan
from shared.sync.claims import stop_if_taken_over
from shared.sync.crm_changes import TABLES
from shared.sync.crm_deleted_meanwhile import deleted_meanwhile
from shared.sync.crm_invites import has_attendees, invite
from shared.sync.crm_privilege import clear_refusal, may_sync_to_outlook, record_refusal
from shared.sync.crm_run_plan import RunPlan, plan_run
from shared.sync.crm_run_reads import RunReads, read_run
from shared.sync.lease import LEASE_POLL_SECONDS, LeaseKeeper, LeaseWaiters, acquire
from shared.sync.links import clear_updates, note_updates
from shared.sync.parties import PartyResolver
from shared.sync.plan import CreateInOutlook, NeutralContent, WriteLink
from shared.sync.policies import kind_enabled
from shared.sync.run import JobOptions
from shared.sync.series_to_outlook import SeriesToOutlook

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
        """Read, plan, apply, record (the module docstring's steps 3 to 5), then the invitations,
        then the same again for the records deleted while their copies were made."""
        origin, side = await self._outlook_of(mailbox, kind)
        reads = await read_run(
            self._crm, self._store, origin, mailbox=mailbox, kind=kind, work=work, clock=self._clock
        )
        series = self._series(reads)
        plan = await plan_run(self._crm, self._store, origin, series, reads, existing=existing)
        if not plan.plans:
            series_writes = plan.series_writes + await series.ended(plan.ended)
            return CrmRunReport(
                mailbox.mailbox_id, work.table, CrmRunOutcome.COMPLETED, reads.records, series_writes
            )
        applier = self._applier(reads, side)
        results, linked = await self._apply(applier, reads, plan, lease)
        series_writes = plan.series_writes + await series.ended(plan.ended)
        created = [r for r in plan.new_ids if str(r) in linked]
        invited, not_invited = await self._invite(reads, origin, applier, created)
        applied = [r for r in results if isinstance(r, AppliedItem)]
        report = CrmRunReport(
            mailbox.mailbox_id,
            work.table,
            CrmRunOutcome.COMPLETED,
            reads.records,
            series_writes + invited + sum(r.outlook_writes for r in applied),
            sum(1 for r in applied if r.unlinked),
            len(results) - len(applied) + not_invited,
        )
        return await self._with_deleted_meanwhile(mailbox, kind, work, lease, report=report, created=created)

    async def _outlook_of(self, mailbox: Mailbox, kind: ItemKind) -> tuple[CrmOriginWriter, GraphOutlookSide]:
        """The mailbox's reader of crmsync's items and the applier's Outlook side; a task's both in
        the user's default To Do list."""
        task_list = (
            await self._writer.default_task_list(mailbox.mailbox_id) if kind is ItemKind.TASK else None
        )
        origin = CrmOriginWriter(self._graph, mailbox.mailbox_id, task_list_id=task_list)
        side = GraphOutlookSide(self._writer, mailbox.mailbox_id, task_list_id=task_list, from_crm=origin)
        return origin, side

    def _series(self, reads: RunReads) -> SeriesToOutlook:
        """The run's series writer: new series instances bring their series, and a series whose
        instances the CRM deleted may end."""
        return SeriesToOutlook(
            crm=self._crm,
            graph=self._graph,
            store=self._store,
            mailbox=reads.mailbox,
            fmap=reads.fmap,
            time_zone=reads.facts.crm_time_zone,
        )

    def _applier(self, reads: RunReads, side: GraphOutlookSide) -> Applier:
        """One applier for the run's plans and its invitations: Outlook writes, then links, then audit."""
        return Applier(
            crm=self._crm,
            links=self._store.links,
            audit=self._store.audit,
            mailbox=reads.mailbox,
            kind=reads.kind,
            resolver=PartyResolver(self._crm, reads.mailbox.crm_caller_object_id),
            outlook=side,
        )

    async def _apply(
        self, applier: Applier, reads: RunReads, plan: RunPlan, lease: LeaseKeeper
    ) -> tuple[list[AppliedItem | CrmError], set[str]]:
        """The plans applied between their intents noted and cleared, if the run still holds the
        mailbox. Each plan's result, and the records newly linked."""
        creating, updating = await self._note_intents(reads, plan)
        lease.check()  # a run that lost its mailbox writes nothing
        results = await applier.apply(plan.plans)
        linked = await self._clear_intents(reads, plan, results, creating=creating, updating=updating)
        return results, linked

    async def _note_intents(self, reads: RunReads, plan: RunPlan) -> tuple[dict[str, str], list[str]]:
        """The create and update intents, before the Graph writes: a crash before the link write
        leaves them, and the next run finds the item by its CRM id (a create) or recognises its own
        write (an update) instead of writing again. The ids noted: created (with a task's title),
        updated."""
        state = self._store.sync_state
        creates = [a for item in plan.plans for a in item.actions if isinstance(a, CreateInOutlook)]
        creating = {str(a.crm_id): _title(a.item) for a in creates}
        if creating:
            await state.note_creates(reads.mailbox.mailbox_id, reads.table, creating)
        updating = await note_updates(
            state, reads.mailbox.mailbox_id, reads.table, [p.actions for p in plan.plans]
        )
        return creating, updating

    async def _clear_intents(
        self,
        reads: RunReads,
        plan: RunPlan,
        results: Sequence[AppliedItem | CrmError],
        *,
        creating: Mapping[str, str],
        updating: list[str],
    ) -> set[str]:
        """The intents whose links were written, cleared (an orphan's too: the delete rules took it).
        The records newly linked, created or found, are returned: they may have invitations to send."""
        linked: set[str] = set()  # newly linked
        relinked: set[str] = set()  # any link written
        for item, result in zip(plan.plans, results, strict=True):
            if isinstance(result, AppliedItem):
                ids = {str(record_id) for record_id in _created_or_found(item)}
                relinked |= ids
                if item.new_link and result.linked:
                    linked |= ids
        state = self._store.sync_state
        rewritten = [i for i in plan.rewritten if i not in updating]
        await clear_updates(
            state, reads.mailbox.mailbox_id, reads.table, [i for i in updating if i in relinked] + rewritten
        )
        done = sorted(i for i in linked if i in creating or uuid.UUID(i) in plan.lost)  # intents recorded
        done += [
            str(item.crm_id) for item in plan.orphans
        ]  # removed by the delete rules (or kept, untracked)
        if done:
            await state.clear_creates(reads.mailbox.mailbox_id, reads.table, done)
        return linked

    async def _invite(
        self, reads: RunReads, origin: CrmOriginWriter, applier: Applier, created: list[uuid.UUID]
    ) -> tuple[int, int]:
        """The attendees of the meetings just created, in a second plan (see
        :func:`~shared.sync.crm_invites.invite`): Outlook writes, plans that failed."""
        inviting = [r for r in created if has_attendees(reads.party_values.get(r, {}))]
        if not inviting:
            return 0, 0
        return await invite(
            self._store,
            reads.mailbox,
            reads.kind,
            origin,
            applier=applier,
            record_ids=inviting,
            states=reads.states,
            party_values=reads.party_values,
            policy=reads.policy,
            facts=reads.facts,
            now=self._clock(),
        )

    async def _with_deleted_meanwhile(
        self,
        mailbox: Mailbox,
        kind: ItemKind,
        work: CrmWork,
        lease: LeaseKeeper,
        *,
        report: CrmRunReport,
        created: list[uuid.UUID],
    ) -> CrmRunReport:
        """Records deleted while this run created them: the delete's routing found no link yet, so it
        was routed to no mailbox. Linked now, they take the delete path here, and count in the report."""
        gone = await deleted_meanwhile(self._crm, work.table, created)
        if not gone:
            return report
        logger.info("CRM -> Outlook: %d records deleted while their copies were made", len(gone))
        deletes = work.model_copy(update={"changed": (), "deleted": tuple(gone)})
        again = await self._sync(mailbox, kind, deletes, {}, lease)
        return dataclasses.replace(
            report,
            outlook_writes=report.outlook_writes + again.outlook_writes,
            unlinked=report.unlinked + again.unlinked,
            failed=report.failed + again.failed,
        )


def _title(item: NeutralContent) -> str:
    """What a To Do task is posted with (a crashed create is looked up by it); empty for others."""
    return (item.subject or "") if isinstance(item, Task) else ""


def _created_or_found(plan: ItemPlan) -> list[uuid.UUID]:
    """The records a plan created in Outlook or linked to an item found there (the fill's and a
    crashed run's creates): their intents are done once the link is written."""
    return [a.link.crm_id for a in plan.actions if isinstance(a, WriteLink)]
