"""One delta page of a sync run: prepare, plan, brake, apply, record. For a page, :class:`PageSync`:

1. prepares everything planning needs, a page at a time: tracking verdicts (mail), the bodies of
   tracked mail only (batched), link rows (the kind's whole link map in one scan when the page is
   big against it), the CRM record each item maps to (also where a crash lost a link write:
   :mod:`shared.sync.link_recovery`), and the facts only I/O can tell
   (:class:`~shared.sync.plan.PlanFacts`: a moved message, another mailbox's link, the calendar
   window, tracking's regarding and attachments);
2. reads the page's CRM records in one request, as the mailbox's CRM user; 3. plans each item
   with the pure planner; 4. checks the mass-delete brake (the run and the last 24 h);
5. unless the run lost its mailbox lease, applies every plan with the applier (one executor),
   parks the items whose CRM write failed in a way retrying cannot fix, records tracking's outcome.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from shared import telemetry
from shared.crm.errors import AuthenticationFailed, CallerNotFound, ConcurrencyMismatch, CrmError
from shared.crm.port import CrmPort
from shared.domain.model import Email, ItemKind, OutlookItem
from shared.store.ports import Store
from shared.store.records import AuditAction, AuditRecord, ItemRef, Mailbox
from shared.sync.adoption import attendee_copy, find_adoptable, invitation
from shared.sync.applier import ACTOR, AppliedItem, Applier, ItemPlan
from shared.sync.brake import check_run, count_deletes
from shared.sync.concurrency import bounded_gather
from shared.sync.crm_reads import left_window, read_crm_states
from shared.sync.field_rules import field_rules
from shared.sync.fieldmaps import CrmValue, crm_record_id, field_map, natural_key
from shared.sync.lease import LeaseKeeper
from shared.sync.link_recovery import (
    CRM_MADE,
    as_written_copies,
    lost_creates,
    lost_links,
    lost_merges,
    orphaned,
)
from shared.sync.links import (
    LinkView,
    clear_crm_creates,
    clear_merges,
    clear_updates,
    from_stored_link,
    note_crm_creates,
    note_merges,
)
from shared.sync.plan import Action, CreateInCrm, CrmState, Link, OutlookState, PlanFacts, SyncPolicy
from shared.sync.planner import plan_item
from shared.sync.policies import is_tracked
from shared.sync.ports import OutlookReader
from shared.sync.resources import ResourceRef
from shared.sync.run import RunOutcome, SyncRunReport
from shared.sync.series import SeriesSync
from shared.sync.tracking import Tracker

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

# A page this many times smaller than the kind's link map still reads it whole (1,000 rows per request).
_PRELOAD_FACTOR = 20
_FATAL_CRM_ERRORS = (ConcurrencyMismatch, CallerNotFound, AuthenticationFailed)
# Only emails and meetings share natural ids across copies (internetMessageId, iCalUId).
_SHARED_NATURAL_KEYS = frozenset({ItemKind.EMAIL, ItemKind.APPOINTMENT})


@dataclass
class RunState:
    """The mutable state of one run of one (mailbox, resource)."""

    mailbox: Mailbox
    ref: ResourceRef
    resource: str
    full: bool
    linked_at_start: int
    applier: Applier
    parked_ids: set[str]
    lease: LeaseKeeper  # the mailbox lease, shared by the run's rounds
    links: LinkView
    window: tuple[dt.datetime, dt.datetime]
    tracker: Tracker | None = None
    crm_time_zone: str | None = None  # the CRM user's zone (appointments' all-day dates), read once
    # the item a CRM -> Outlook run created for a record (CRM id, a task's title), by the id it carries
    find_created: Callable[..., Awaitable[OutlookItem | None]] | None = None
    deletes: int = 0  # within the brake's window: applied before the run (see job.py) and by it
    allowed_deletes: int | None = None  # deletes an administrator confirmed (a brake release)
    seen: set[str] = field(default_factory=set)
    pages: int = 0
    items_seen: int = 0
    items_synced: int = 0
    crm_writes: int = 0
    parked: int = 0
    fitted: int = 0

    def report(self, outcome: RunOutcome, message: str | None = None) -> SyncRunReport:
        return SyncRunReport(
            self.mailbox.mailbox_id,
            self.resource,
            outcome,
            self.full,
            self.pages,
            self.items_seen,
            self.items_synced,
            self.crm_writes,
            self.parked,
            self.fitted,
            message,
        )


@dataclass(frozen=True, slots=True)
class Prepared:
    """An item ready to plan: its Outlook state, the link that holds it (its own row, or for an
    unlinked email or meeting another copy's), the CRM record it maps to, and its facts."""

    item: OutlookItem
    outlook: OutlookState
    link: Link | None
    record_id: uuid.UUID | None
    own_link: bool
    facts: PlanFacts = field(default_factory=PlanFacts)
    from_crm: bool = False  # a copy a CRM -> Outlook run made whose link write was lost
    lost_create: bool = False  # deleted, its record made by an Outlook -> CRM create whose link was lost
    rewritten: bool = False  # its link is the one a CRM -> Outlook update's lost link write left


@dataclass(frozen=True, slots=True)
class _Planned:
    item: OutlookItem
    actions: list[Action]
    projection: dict[str, CrmValue]
    new_link: bool


class PageSync:
    """Syncs the pages of a run (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        crm: CrmPort,
        reader: OutlookReader,
        clock: Callable[[], dt.datetime],
        mass_delete_ratio: float,
        keep_lease: Callable[[RunState], Awaitable[None]],
    ) -> None:
        self._store = store
        self._crm = crm
        self._reader = reader
        self._clock = clock
        self._ratio = mass_delete_ratio
        self._keep_lease = keep_lease
        self._series = SeriesSync(crm, reader, store.sync_state)

    async def process(self, run: RunState, items: list[OutlookItem]) -> None:
        """Plan every item of the page, apply the brake to the run's deletes, then apply."""
        series: list[_Planned] = []
        if run.ref.kind is ItemKind.APPOINTMENT:
            series, items = await self._plan_series(run, items)
        sync_state = self._store.sync_state
        prepared = await lost_links(sync_state, run, await self._prepare(run, items))
        prepared = await lost_creates(sync_state, run, prepared)
        states = await self._read_crm_states(run, prepared)
        prepared = await self._adopt(run, prepared, states)
        prepared = await as_written_copies(sync_state, run, [orphaned(e, states) for e in prepared], states)
        prepared = await lost_merges(sync_state, run, prepared, states)
        policy = await field_rules(self._crm).policy(run.mailbox, run.ref.kind)
        planned: list[_Planned] = []
        for entry in prepared:
            if entry.record_id is not None and entry.record_id not in states:
                continue  # its record could not be read: parked
            state = states[entry.record_id] if entry.record_id is not None else None
            planned.append(self._plan(run, entry, state, policy))
        planned += series
        page_deletes = sum(count_deletes(plan.actions) for plan in planned)
        check_run(run.linked_at_start, run.deletes, page_deletes, self._ratio, run.allowed_deletes)
        run.deletes += page_deletes
        busy = [plan for plan in planned if plan.actions]
        if not busy:
            return
        run.lease.check()  # a run that lost its mailbox writes nothing more
        ending = await self._series.series_of_deletes(run.mailbox, [a for p in busy for a in p.actions])
        table = field_map(run.ref.kind).table
        of_series = {id(plan) for plan in series}  # linked by SeriesSync as it writes them
        creating = [(p.item.item_id, p.actions) for p in busy if p.new_link and id(p) not in of_series]
        if run.ref.kind in CRM_MADE:  # the intents, before the CRM writes (see link_recovery.py)
            await note_crm_creates(self._store.sync_state, run.mailbox.mailbox_id, table, creating)
        merging = await note_merges(
            sync_state, run.mailbox.mailbox_id, table, [(p.item.item_id, p.actions) for p in busy]
        )
        results = await run.applier.apply(
            [ItemPlan(plan.actions, plan.projection, plan.new_link) for plan in busy]
        )
        await self._series.remove_emptied(run.mailbox, run.applier, ending)
        applied = {
            plan.item.item_id for plan, r in zip(busy, results, strict=True) if isinstance(r, AppliedItem)
        }
        relinked = [str(e.record_id) for e in prepared if e.from_crm and e.item.item_id in applied]
        created = [
            str(action.record_id)
            for plan, result in zip(busy, results, strict=True)
            if plan.new_link and isinstance(result, AppliedItem) and result.linked
            for action in plan.actions
            if isinstance(action, CreateInCrm)
        ]
        created += [str(e.record_id) for e in prepared if e.lost_create and e.item.item_id in applied]
        if run.ref.kind in CRM_MADE:
            await clear_crm_creates(self._store.sync_state, run.mailbox.mailbox_id, table, created)
        if relinked:  # their intents are done: linked, or taken through the delete rules
            await self._store.sync_state.clear_creates(run.mailbox.mailbox_id, table, relinked)
        rewritten = [str(e.record_id) for e in prepared if e.rewritten and e.item.item_id in applied]
        await clear_updates(self._store.sync_state, run.mailbox.mailbox_id, table, rewritten)
        merged = [crm_id for item_id, crm_id in merging.items() if item_id in applied]  # linked
        merged += [str(e.record_id) for e in prepared if e.facts.merge_intent and e.item.item_id in applied]
        await clear_merges(sync_state, run.mailbox.mailbox_id, table, merged)
        await bounded_gather(
            self._park_or_raise(run, plan.item, result)
            if isinstance(result, CrmError)
            else self._guard(run, plan.item, self._applied(run, plan, result))
            for plan, result in zip(busy, results, strict=True)
        )
        if run.tracker is not None:
            await run.tracker.flush_audit()  # the page's tracking rows and decisions, in transactions
        await self._keep_lease(run)

    async def _plan_series(
        self, run: RunState, items: list[OutlookItem]
    ) -> tuple[list[_Planned], list[OutlookItem]]:
        """Occurrences and exceptions of series become Dynamics series (:mod:`shared.sync.series`);
        the rest goes the ordinary way."""
        tracked = [item for item in items if is_tracked(run.mailbox.settings, item)]
        run.lease.check()  # a series' master is written here: only while the run holds the mailbox
        plans, rest = await self._series.plan(
            mailbox=run.mailbox,
            links=run.links,
            applier=run.applier,
            items=tracked,
            park=lambda item, error: self._park_or_raise(run, item, error),
            audit=self._store.audit.append,
        )
        taken = {id(item) for item in tracked} - {id(item) for item in rest}
        remaining = [item for item in items if id(item) not in taken]
        return [_Planned(p.item, p.actions, p.projection, p.new_link) for p in plans], remaining

    async def _guard(self, run: RunState, item: OutlookItem, step: Awaitable[_T]) -> _T | None:
        """Await ``step``; a CRM error retrying cannot fix parks the item (``None``), others raise."""
        try:
            return await step
        except CrmError as error:
            await self._park_or_raise(run, item, error)
            return None

    async def _park_or_raise(self, run: RunState, item: OutlookItem, error: CrmError) -> None:
        if error.retryable or isinstance(error, _FATAL_CRM_ERRORS):
            raise error
        await self._park(run, item, error)

    # -- prepare ----------------------------------------------------------------------------------

    async def _prepare(self, run: RunState, items: list[OutlookItem]) -> list[Prepared]:
        """Tracking verdicts, tracked mail bodies (batched), link rows, the CRM record each item maps
        to and its facts: everything planning needs, read a page at a time."""
        fmap = field_map(run.ref.kind)
        if not run.links.preloaded and len(items) * _PRELOAD_FACTOR >= run.linked_at_start:
            await run.links.preload()  # one scan of the kind's links beats a point read per item
        if run.links.preloaded and run.tracker is not None:
            await run.tracker.preload()  # likewise the tracking index's message rows
        verdicts: list[tuple[OutlookItem, bool]] = []
        decided = await bounded_gather(self._guard(run, item, self._verdict(run, item)) for item in items)
        for item, verdict in zip(items, decided, strict=True):
            if verdict is None:
                continue  # parked
            tracked = not item.removed and verdict
            if tracked and item.item is not None and fmap.skip_reason(item.item):
                continue  # drafts, series masters: never synchronised (see the field maps)
            verdicts.append((item, tracked))
        ready = await self._with_bodies(run, verdicts)
        linked = await bounded_gather(self._guard(run, item, self._linked(run, item, t)) for item, t in ready)
        return [entry for entry in linked if entry is not None]

    async def _with_bodies(
        self, run: RunState, verdicts: list[tuple[OutlookItem, bool]]
    ) -> list[tuple[OutlookItem, bool]]:
        """The bodies of tracked mail only (privacy: an untracked message's body is never read); a
        tracked folder's delta page brought them already."""
        wanted = [
            item.item_id
            for item, tracked in verdicts
            if tracked and isinstance(item.item, Email) and item.item.body is None
        ]
        if not wanted:
            return verdicts
        bodies = await self._reader.fetch_message_bodies(run.mailbox.mailbox_id, wanted)
        ready: list[tuple[OutlookItem, bool]] = []
        for listed, tracked in verdicts:
            if listed.item_id not in bodies:
                ready.append((listed, tracked))
                continue
            body = bodies[listed.item_id]
            if body is None or not isinstance(listed.item, Email):
                continue  # deleted since the page was read: the next delta reports the removal
            content = listed.item.model_copy(update={"body": body.content, "body_is_html": body.is_html})
            ready.append((listed.model_copy(update={"item": content}), tracked))
        return ready

    async def _linked(self, run: RunState, item: OutlookItem, tracked: bool) -> Prepared | None:
        """The item with the link that holds it, the record it maps to and its facts; ``None``:
        nothing to do."""
        kind = run.ref.kind
        outlook = OutlookState.from_outlook_item(item, tracked=tracked)
        stored = await run.links.by_outlook(item.item_id)
        if stored is not None:
            link = from_stored_link(stored)
            facts = await self._facts(run, item, link, own_link=True, tracked=tracked)
            if attendee_copy(run.mailbox.mailbox_id, item, link.crm_id):
                facts = dataclasses.replace(facts, attendee_copy=True)
            return Prepared(item, outlook, link, link.crm_id, own_link=True, facts=facts)
        if outlook.item is None or outlook.gone is not None:
            if kind in CRM_MADE:  # unless a create of it lost its link write: see link_recovery.py
                return Prepared(item, outlook, None, None, own_link=False)
            return None  # gone (or untracked) and never linked: nothing to do
        record_id = outlook.crm_id or crm_record_id(
            kind, natural_key(run.mailbox.mailbox_id, item.item_id, outlook.item)
        )
        # Another copy in this mailbox (a message sent to oneself: Sent Items and Inbox) may already
        # hold the record; the planner then skips this copy instead of fighting over it.
        same = None
        if kind in _SHARED_NATURAL_KEYS:
            same = await run.links.by_crm(field_map(kind).table, str(record_id))
        copy = from_stored_link(same) if same is not None else None
        facts = await self._facts(run, item, copy, own_link=False, tracked=tracked)
        return Prepared(item, outlook, copy, record_id, own_link=False, facts=facts)

    @staticmethod
    async def _facts(
        run: RunState, item: OutlookItem, link: Link | None, *, own_link: bool, tracked: bool
    ) -> PlanFacts:
        if run.tracker is None:
            return PlanFacts()
        return await run.tracker.facts(item, link, own_link=own_link, tracked=tracked)

    async def _verdict(self, run: RunState, item: OutlookItem) -> bool:
        """Whether the item takes part: the tracker's decision for mail, else the settings."""
        decision = await run.tracker.decide(item) if run.tracker is not None else None
        return decision.tracked if decision is not None else is_tracked(run.mailbox.settings, item)

    async def _adopt(
        self, run: RunState, prepared: list[Prepared], states: dict[uuid.UUID, CrmState]
    ) -> list[Prepared]:
        """Unlinked items whose deterministic record does not exist may be in the CRM already
        (tracked before crmsync): link them to that record instead of creating a duplicate. Looked
        up in full reads (onboarding, resync), where a mailbox meets what was tracked before it;
        an incremental run's new items are new (a burst pays no lookup), except invitations: a
        meeting made in Dynamics arrives in an attendee's mailbox as one (see adoption.py)."""
        fresh = {
            entry.item.item_id: entry.outlook.item
            for entry in prepared
            if (run.full or invitation(entry.outlook.item))
            and entry.link is None
            and not entry.from_crm
            and entry.outlook.item is not None
            and entry.outlook.gone is None
            and entry.record_id in states
            and states[entry.record_id].values is None
        }
        if not fresh:
            return prepared
        try:
            adopted = await find_adoptable(self._crm, run.mailbox, run.ref.kind, fresh)
            states.update(
                await read_crm_states(self._crm, run.mailbox, run.ref.kind, list(set(adopted.values())))
            )
        except CrmError as error:
            if error.retryable or isinstance(error, _FATAL_CRM_ERRORS):
                raise
            logger.info("existing CRM records not looked up (%s): creating new ones", error.code)
            return prepared
        table = field_map(run.ref.kind).table
        result: list[Prepared] = []
        taken: set[uuid.UUID] = set()
        for entry in prepared:
            record_id = adopted.get(entry.item.item_id)
            if record_id is None or states[record_id].values is None:
                result.append(entry)
                continue
            holder = await run.links.by_crm(table, str(record_id))  # another copy may hold it already
            if run.ref.kind is ItemKind.CONTACT and (holder is not None or record_id in taken):
                # Contacts are personal: two Outlook contacts with one address are two contacts,
                # and the one that did not adopt the record gets its own.
                result.append(entry)
                continue
            taken.add(record_id)
            link = from_stored_link(holder) if holder is not None else None
            facts = entry.facts
            if attendee_copy(run.mailbox.mailbox_id, entry.item, record_id):
                facts = dataclasses.replace(facts, attendee_copy=True)
            result.append(dataclasses.replace(entry, record_id=record_id, link=link, facts=facts))
        return result

    async def _read_crm_states(self, run: RunState, prepared: list[Prepared]) -> dict[uuid.UUID, CrmState]:
        """The page's CRM records in one request; if the user may not read them all, item by item
        (so only the items concerned are parked)."""
        ids = list(dict.fromkeys(entry.record_id for entry in prepared if entry.record_id is not None))
        try:
            return await read_crm_states(self._crm, run.mailbox, run.ref.kind, ids)
        except CrmError as error:
            if error.retryable or isinstance(error, _FATAL_CRM_ERRORS):
                raise
        states: dict[uuid.UUID, CrmState] = {}
        for entry in prepared:
            if entry.record_id is not None and entry.record_id not in states:
                read = read_crm_states(self._crm, run.mailbox, run.ref.kind, [entry.record_id])
                state = await self._guard(run, entry.item, read)
                if state is not None:
                    states.update(state)
        return states

    # -- plan -------------------------------------------------------------------------------------

    def _plan(self, run: RunState, entry: Prepared, crm: CrmState | None, policy: SyncPolicy) -> _Planned:
        kind, outlook = run.ref.kind, entry.outlook
        facts = entry.facts
        if (
            entry.own_link
            and crm is not None
            and outlook.gone is not None
            and left_window(run.window, kind, crm)
        ):
            facts = PlanFacts(outside_window=True)
        facts = dataclasses.replace(facts, crm_time_zone=run.crm_time_zone)
        actions = plan_item(
            kind,
            mailbox_id=run.mailbox.mailbox_id,
            outlook=outlook,
            link=entry.link,
            crm=crm,
            policy=policy,
            now=self._clock(),
            facts=facts,
        )
        fmap = field_map(kind, run.crm_time_zone)
        projection = fmap.project(outlook.item).values if outlook.item is not None else {}
        return _Planned(entry.item, actions, projection, new_link=entry.link is None)

    # -- after ------------------------------------------------------------------------------------

    async def _applied(self, run: RunState, plan: _Planned, applied: AppliedItem) -> None:
        """After one item's plan was applied: tracking, counts, and its parked entry (if any) goes."""
        run.links.forget(plan.actions, plan.item.item_id)
        if run.tracker is not None:
            await run.tracker.after_apply(plan.item, plan.actions)
        run.crm_writes += applied.crm_writes
        run.fitted += len(applied.fitted)
        if (
            applied.crm_writes
            or applied.outlook_writes
            or applied.unlinked
            or (applied.linked and plan.new_link)
        ):
            run.items_synced += 1
        if plan.item.item_id in run.parked_ids:
            await self._store.parked.remove(
                run.mailbox.mailbox_id, ItemRef(kind=run.ref.kind, outlook_id=plan.item.item_id)
            )
            run.parked_ids.discard(plan.item.item_id)

    async def _park(self, run: RunState, item: OutlookItem, error: CrmError) -> None:
        reason = "crm_" + re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()
        message = re.sub(r"[@\x00-\x1f\x7f-\x9f]", " ", error.remedy)[:500]
        ref = ItemRef(kind=run.ref.kind, outlook_id=item.item_id)
        await self._store.parked.park(run.mailbox.mailbox_id, ref, reason_code=reason, message=message)
        await self._store.audit.append(
            AuditRecord.for_item(
                mailbox_id=run.mailbox.mailbox_id,
                actor=ACTOR,
                action=AuditAction.PARKED,
                kind=run.ref.kind,
                outlook_id=item.item_id,
                reason_code=reason,
            )
        )
        run.parked += 1
        run.parked_ids.add(item.item_id)
        telemetry.record_parked(run.ref.kind.value, reason)
        logger.warning("parked a %s item: %s (%s)", run.ref.kind.value, reason, error.code)
