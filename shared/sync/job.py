"""The per-mailbox Outlook -> CRM sync run (docs/ARCHITECTURE.md, data flow steps 2-5).

One run syncs one (mailbox, resource), where the resource is the subscription resource string of
:func:`shared.outlook.subscriptions.resource_path`. It:

1. takes the mailbox lease (one synchronizing instance per mailbox), renewing it between pages;
2. clears the dirty flag *before* reading, so a notification arriving during the run leaves a
   fresh mark (and a new job) instead of being swallowed;
3. reads the delta from the stored link ("Use delta query to track changes in Microsoft Graph
   data", learn.microsoft.com/graph/delta-query-overview) and, page by page: converts, asks the
   policies (:mod:`shared.sync.policies`), fetches the body of tracked mail only, plans each item
   against the link map (:func:`~shared.sync.planner.plan_item`), checks the mass-delete brake for
   the page, applies (:class:`~shared.sync.applier.Applier`: CRM, then Outlook, then link rows), and
   only then stores the page's next link (the final delta link at the end), so a crash re-runs at
   most one page and deterministic ids make the re-run harmless;
4. parks an item whose CRM write failed in a way retrying cannot fix (privilege denied, invalid
   data) and goes on; transient failures (throttling, outages, a record changed under us) raise, so
   the queue retries the job with the delta link not advanced;
5. answers an expired delta token (410 / syncStateNotFound) by a full resync against the link map:
   the sync state is reset and the resource re-read from scratch; items already linked and unchanged
   are not rewritten (hashes), and linked items no longer listed count as deleted - behind the
   mass-delete brake, which on tripping marks the mailbox degraded and deletes nothing.

Calendar: the delta is a ``calendarView`` window (default 30 days back to 365 days ahead, fixed in
the delta token when the round starts: "Get incremental changes to events in a calendar view",
learn.microsoft.com/graph/delta-query-events). An event moved out of the window is reported
``@removed`` like a delete, so a removal of a linked appointment whose CRM record lies outside the
window is ignored rather than deleting the CRM record. Sliding the window needs a new baseline
(``reset``), which the link map makes cheap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from shared.config import Settings
from shared.crm.errors import AuthenticationFailed, CallerNotFound, ConcurrencyMismatch, CrmError
from shared.crm.port import CrmPort
from shared.domain.model import Email, ItemKind, OutlookItem
from shared.outlook.delta import DeltaPage, DeltaReader
from shared.outlook.errors import DeltaTokenExpired
from shared.outlook.writers import OutlookWriter
from shared.store.errors import LeaseHeld
from shared.store.jobs import SyncJob
from shared.store.ports import LinkStore, Store
from shared.store.records import (
    AuditAction,
    AuditRecord,
    ItemRef,
    Lease,
    Mailbox,
    MailboxState,
    SyncState,
    utc_now,
)
from shared.store.records import Link as StoredLink
from shared.sync.applier import (
    ACTOR,
    AppliedItem,
    Applier,
    BulkPlan,
    GraphOutlookSide,
    PartyResolver,
    bulk_eligible,
    from_stored_link,
)
from shared.sync.concurrency import bounded_gather
from shared.sync.fieldmaps import CrmValue, crm_record_id, field_map, natural_key
from shared.sync.fieldmaps.base import parse_utc
from shared.sync.merge import Side
from shared.sync.planner import (
    Action,
    CrmState,
    DropLink,
    Link,
    MassDeleteRefusedError,
    OutlookState,
    UnlinkOnly,
    WriteLink,
    check_mass_delete,
    count_deletes,
    plan_item,
)
from shared.sync.policies import is_tracked, kind_enabled, sync_policy
from shared.sync.tracking import Tracker, TrackingService

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

_RESOURCE = re.compile(
    r"^users/(?P<mailbox>[^/]+)/(?:"
    r"mailFolders\('(?P<folder>[^']+)'\)/messages"
    r"|(?P<plain>contacts|events)"
    r"|todo/lists/(?P<task_list>.+)/tasks)$"
)
_CLEAR_DIRTY_ATTEMPTS = 5
_LEASE_POLL_SECONDS = 0.25
_MAX_ROUNDS = 10
# A page this many times smaller than the kind's link map still reads it whole (1,000 rows per request).
_PRELOAD_FACTOR = 20  # delta rounds one run takes while notifications keep the resource dirty
_MASS_DELETE_REASON = "mass_delete_refused"
_FATAL_CRM_ERRORS = (ConcurrencyMismatch, CallerNotFound, AuthenticationFailed)


_SHARED_NATURAL_KEYS = frozenset({ItemKind.EMAIL, ItemKind.APPOINTMENT})


class InvalidResource(ValueError):
    """A sync job names a resource crmsync does not sync (or another mailbox's)."""


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """What a subscription resource string means: the item kind and where it lives."""

    kind: ItemKind
    mail_folder: str | None = None
    task_list_id: str | None = None


def parse_resource(mailbox_id: str, resource: str) -> ResourceRef:
    """Inverse of :func:`~shared.outlook.subscriptions.resource_path` for one mailbox."""
    match = _RESOURCE.match(resource)
    if match is None or match["mailbox"] != mailbox_id:
        raise InvalidResource("not a resource of this mailbox that crmsync syncs")
    if match["folder"]:
        return ResourceRef(ItemKind.EMAIL, mail_folder=match["folder"])
    if match["task_list"]:
        return ResourceRef(ItemKind.TASK, task_list_id=match["task_list"])
    return ResourceRef(ItemKind.CONTACT if match["plain"] == "contacts" else ItemKind.APPOINTMENT)


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Tuning of a run; :meth:`from_settings` takes the app's values."""

    lease_seconds: int = 120
    mass_delete_ratio: float = 0.5
    calendar_past: dt.timedelta = dt.timedelta(days=30)
    calendar_future: dt.timedelta = dt.timedelta(days=365)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: dt.timedelta) -> JobOptions:
        return cls(settings.lease_seconds, settings.mass_delete_ratio, **overrides)


class RunOutcome(enum.StrEnum):
    COMPLETED = "completed"
    MAILBOX_DISABLED = "mailbox_disabled"
    KIND_DISABLED = "kind_disabled"
    MASS_DELETE_REFUSED = "mass_delete_refused"


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """Reported after every page (for the onboarding progress bar)."""

    resource: str
    pages: int
    items_seen: int
    items_synced: int


ProgressCallback = Callable[[SyncProgress], None]


@dataclass(frozen=True, slots=True)
class SyncRunReport:
    """What one run did. ``message`` explains a refused run (no addresses, no content).

    ``full_resync``: the run started without a delta link (first baseline, 410, or an admin resync),
    so linked items it did not see were treated as gone. A run resuming a crashed full read from its
    stored next link is incremental and leaves that sweep out."""

    mailbox_id: str
    resource: str
    outcome: RunOutcome
    full_resync: bool = False
    pages: int = 0
    items_seen: int = 0
    items_synced: int = 0
    crm_writes: int = 0
    parked: int = 0
    fitted: int = 0
    message: str | None = None


@dataclass
class _Run:
    """The mutable state of one run."""

    mailbox: Mailbox
    ref: ResourceRef
    resource: str
    full: bool
    linked_at_start: int
    applier: Applier
    resolver: PartyResolver
    parked_ids: set[str]
    holder: list[Lease]  # shared by the run's rounds: [the current lease]
    links: _LinkView
    tracker: Tracker | None = None
    deletes: int = 0
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
class _Prepared:
    """An item ready to plan: its Outlook state, the link that holds it (its own row, or for an
    unlinked email or meeting another copy's), and the CRM record it maps to."""

    item: OutlookItem
    outlook: OutlookState
    link: Link | None
    record_id: uuid.UUID | None
    own_link: bool


@dataclass(frozen=True, slots=True)
class _Planned:
    item: OutlookItem
    actions: list[Action]
    projection: dict[str, CrmValue]
    new_link: bool


class _LinkView:
    """The run's reads of the link map. A full read loads the kind's links once (one partition scan
    instead of a point read per item); rows the run rewrites are read from the store again."""

    def __init__(self, links: LinkStore, mailbox_id: str, kind: ItemKind) -> None:
        self._links = links
        self._mailbox = mailbox_id
        self._kind = kind
        self._by_outlook: dict[str, StoredLink] | None = None
        self._by_crm: dict[str, StoredLink] = {}
        self._stale: set[str] = set()

    @property
    def preloaded(self) -> bool:
        return self._by_outlook is not None

    def loaded(self) -> list[StoredLink]:
        """The links the preload read (the kind's link map when the run started)."""
        return list(self._by_outlook.values()) if self._by_outlook is not None else []

    async def preload(self) -> None:
        self._by_outlook = {}
        async for link in self._links.list_links(self._mailbox, self._kind):
            self._by_outlook[link.outlook_id] = link
            self._by_crm[link.crm_id.lower()] = link

    async def by_outlook(self, outlook_id: str) -> StoredLink | None:
        if self._by_outlook is None or outlook_id in self._stale:
            return await self._links.get_by_outlook(self._mailbox, self._kind, outlook_id)
        return self._by_outlook.get(outlook_id)

    async def by_crm(self, table: str, crm_id: str) -> StoredLink | None:
        key = crm_id.lower()
        cached = self._by_crm.get(key)
        if self._by_outlook is None or key in self._stale or (cached and cached.outlook_id in self._stale):
            return await self._links.get_by_crm(self._mailbox, table, crm_id)
        return cached

    def forget(self, actions: Sequence[Action], outlook_id: str) -> None:
        """The rows a plan wrote (or dropped) are read from the store from now on."""
        if self._by_outlook is None:
            return
        self._stale.add(outlook_id)
        for action in actions:
            if isinstance(action, WriteLink):
                self._stale.add(str(action.link.crm_id).lower())
            elif isinstance(action, UnlinkOnly | DropLink):
                self._stale.add(str(action.crm_id).lower())


class MailboxSyncJob:
    """Runs Outlook -> CRM sync for one (mailbox, resource) at a time; safe to run concurrently
    (the lease admits one run per mailbox; others raise ``LeaseHeld`` and the queue retries)."""

    def __init__(
        self,
        *,
        store: Store,
        crm: CrmPort,
        reader: DeltaReader,
        writer: OutlookWriter,
        options: JobOptions | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        owner: str | None = None,
        tracking: TrackingService | None = None,
    ) -> None:
        self._store = store
        self._crm = crm
        self._reader = reader
        self._writer = writer
        self._options = options or JobOptions()
        self._clock = clock
        self._owner = owner or f"worker:{uuid.uuid4().hex}"
        self._tracking = tracking

    def with_options(self, **changes: Any) -> MailboxSyncJob:
        """The same job with some options changed (e.g. an admin's confirmed mass delete)."""
        options = dataclasses.replace(self._options, **changes)
        return MailboxSyncJob(
            store=self._store,
            crm=self._crm,
            reader=self._reader,
            writer=self._writer,
            options=options,
            clock=self._clock,
            owner=self._owner,
            tracking=self._tracking,
        )

    async def run_job(self, job: SyncJob, *, progress: ProgressCallback | None = None) -> SyncRunReport:
        return await self.run(job.mailbox_id, job.resource, progress=progress)

    async def run(
        self,
        mailbox_id: str,
        resource: str,
        *,
        progress: ProgressCallback | None = None,
        full_resync: bool = False,
        wait_for_lease: bool = False,
    ) -> SyncRunReport:
        """Sync one resource of one mailbox from its stored delta link (a full read if none).

        ``full_resync``: forget the delta link first (under the lease, so no concurrent run stores a
        newer one meanwhile) and re-read everything against the link map.
        ``wait_for_lease``: when a worker holds the mailbox (the echo of onboarding's own stamps, say),
        wait up to one lease period for it instead of raising ``LeaseHeld`` at once (for onboarding
        and admin commands; queue jobs are requeued instead)."""
        ref = parse_resource(mailbox_id, resource)
        mailbox = await self._store.registry.get_mailbox(mailbox_id)
        if not mailbox.enabled:
            return SyncRunReport(mailbox_id, resource, RunOutcome.MAILBOX_DISABLED)
        if not kind_enabled(mailbox.settings, ref.kind):
            return SyncRunReport(mailbox_id, resource, RunOutcome.KIND_DISABLED)
        state_store = self._store.sync_state
        lease = await self._acquire(mailbox_id, wait=wait_for_lease)
        holder = [lease]  # the current lease (renewals replace it)
        try:
            if full_resync:
                await state_store.reset(mailbox_id, resource)
            report = await self._round(mailbox, ref, resource, holder, progress)
            # Changes notified during the run left the resource dirty: take them now, under the
            # lease we hold, instead of leaving them to a job that waits for the lease to come free.
            for _ in range(_MAX_ROUNDS - 1):
                if report.outcome is not RunOutcome.COMPLETED:
                    break
                if not (await state_store.get_state(mailbox_id, resource)).dirty:
                    break
                report = _combined(report, await self._round(mailbox, ref, resource, holder, None))
            if report.outcome is RunOutcome.COMPLETED:
                await self._other_dirty_resources(mailbox, resource, holder)
            return report
        finally:
            await state_store.release(holder[0])

    async def _other_dirty_resources(self, mailbox: Mailbox, done: str, holder: list[Lease]) -> None:
        """The mailbox's other resources notified meanwhile, under the same lease: their own jobs
        would otherwise wait for it (a requeue and a poll, seconds) and find the work done."""
        mailbox_id = mailbox.mailbox_id
        for resource in await self._store.sync_state.dirty_resources(mailbox_id):
            if resource == done:
                continue
            try:
                ref = parse_resource(mailbox_id, resource)
            except InvalidResource:
                continue
            if not kind_enabled(mailbox.settings, ref.kind):
                continue
            try:
                await self._round(mailbox, ref, resource, holder, None)
            except Exception as error:  # that resource's own queued job retries it
                logger.warning(
                    "a dirty %s resource failed under this lease: %s", ref.kind.value, type(error).__name__
                )

    async def _acquire(self, mailbox_id: str, *, wait: bool) -> Lease:
        deadline = time.monotonic() + (self._options.lease_seconds + _LEASE_POLL_SECONDS if wait else 0)
        while True:
            try:
                return await self._store.sync_state.try_acquire(
                    mailbox_id, self._owner, self._options.lease_seconds
                )
            except LeaseHeld:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(_LEASE_POLL_SECONDS)

    async def _round(
        self,
        mailbox: Mailbox,
        ref: ResourceRef,
        resource: str,
        holder: list[Lease],
        progress: ProgressCallback | None,
    ) -> SyncRunReport:
        """One delta round from the stored link; an expired token turns it into a full resync."""
        mailbox_id = mailbox.mailbox_id
        state = await self._clear_dirty(mailbox_id, resource)
        run = await self._start(mailbox, ref, resource, state.delta_link, holder)
        try:
            return await self._sync(run, state.delta_link, progress)
        except DeltaTokenExpired:
            logger.warning("delta token expired for %s; full resync", ref.kind.value)
            await self._store.sync_state.reset(mailbox_id, resource)
            await self._audit(mailbox_id, AuditAction.RESYNC, ref.kind, "delta_token_expired")
            run = await self._start(mailbox, ref, resource, None, holder)
            return await self._sync(run, None, progress)

    async def _clear_dirty(self, mailbox_id: str, resource: str) -> SyncState:
        """Clear the dirty flag before reading; a notification in between wins the race: re-read."""
        for _ in range(_CLEAR_DIRTY_ATTEMPTS):
            state = await self._store.sync_state.get_state(mailbox_id, resource)
            if not state.dirty or await self._store.sync_state.clear_dirty(state):
                return state
        return await self._store.sync_state.get_state(mailbox_id, resource)

    async def _start(
        self, mailbox: Mailbox, ref: ResourceRef, resource: str, link: str | None, holder: list[Lease]
    ) -> _Run:
        outlook = GraphOutlookSide(self._writer, mailbox.mailbox_id, task_list_id=ref.task_list_id)
        applier = Applier(crm=self._crm, links=self._store.links, audit=self._store.audit, outlook=outlook)
        parked = {
            entry.ref.outlook_id
            async for entry in self._store.parked.list_parked(mailbox.mailbox_id)
            if entry.ref.kind is ref.kind and entry.ref.outlook_id
        }
        links = _LinkView(self._store.links, mailbox.mailbox_id, ref.kind)
        if link is None:
            await links.preload()
            linked = len(links.loaded())
        else:
            linked = await self._store.links.count(mailbox.mailbox_id, ref.kind)
        return _Run(
            mailbox=mailbox,
            ref=ref,
            resource=resource,
            full=link is None,
            links=links,
            linked_at_start=linked,
            applier=applier,
            resolver=PartyResolver(self._crm, mailbox.crm_caller_object_id),
            parked_ids=parked,
            holder=holder,
            tracker=self._tracking.start(mailbox) if self._tracking and ref.kind is ItemKind.EMAIL else None,
        )

    def _pages(self, run: _Run, link: str | None) -> AsyncIterator[DeltaPage]:
        mailbox_id, ref = run.mailbox.mailbox_id, run.ref
        if ref.kind is ItemKind.EMAIL:
            folder = ref.mail_folder or "inbox"
            return self._reader.messages(
                mailbox_id, folder=folder, link=link, mailbox_address=run.mailbox.upn
            )
        if ref.kind is ItemKind.CONTACT:
            return self._reader.contacts(mailbox_id, link=link)
        if ref.kind is ItemKind.TASK:
            return self._reader.tasks(mailbox_id, ref.task_list_id or "", link=link)
        start, end = self._window()
        return self._reader.events(mailbox_id, window_start=start, window_end=end, link=link)

    def _window(self) -> tuple[dt.datetime, dt.datetime]:
        now = self._clock()
        return now - self._options.calendar_past, now + self._options.calendar_future

    async def _sync(self, run: _Run, link: str | None, progress: ProgressCallback | None) -> SyncRunReport:
        mailbox_id = run.mailbox.mailbox_id
        async for page in self._pages(run, link):
            items = list(page.items)
            run.seen.update(item.item_id for item in items)
            if page.delta_link is not None and run.full:
                items += self._unseen_links(run)
            try:
                await self._process(run, items)
            except MassDeleteRefusedError as refused:
                await self._refuse(run, refused)
                return run.report(RunOutcome.MASS_DELETE_REFUSED, str(refused))
            next_link = page.next_link or page.delta_link
            if next_link:
                await self._store.sync_state.save_delta_link(mailbox_id, run.resource, next_link)
            run.pages += 1
            run.items_seen += len(page.items)
            if progress is not None:
                progress(SyncProgress(run.resource, run.pages, run.items_seen, run.items_synced))
            await self._keep_lease(run)
        return run.report(RunOutcome.COMPLETED)

    @staticmethod
    def _unseen_links(run: _Run) -> list[OutlookItem]:
        """After a full read: linked items the read did not list are gone from Outlook. Mail is left
        out (one kind spans several folders, and a deleted tracked email keeps its CRM record).
        The run's preloaded link map is enough: every link written since belongs to a listed item."""
        if run.ref.kind is ItemKind.EMAIL:
            return []
        mailbox_id = run.mailbox.mailbox_id
        return [
            OutlookItem(mailbox_id=mailbox_id, item_id=link.outlook_id, kind=run.ref.kind, removed=True)
            for link in run.links.loaded()
            if link.outlook_id not in run.seen
        ]

    async def _process(self, run: _Run, items: list[OutlookItem]) -> None:
        """Plan every item of the page, apply the brake to the page's deletes, then apply: the common
        plans (upsert, stamp, link) in bulk, the rest item by item."""
        prepared = await self._prepare(run, items)
        states = await self._read_crm_states(run, prepared)
        planned: list[_Planned] = []
        for entry in prepared:
            if entry.record_id is not None and entry.record_id not in states:
                continue  # its record could not be read: parked
            state = states[entry.record_id] if entry.record_id is not None else None
            plan = await self._guard(run, entry.item, self._plan(run, entry, state))
            if plan is not None:
                planned.append(plan)
        page_deletes = sum(count_deletes(plan.actions) for plan in planned)
        check_mass_delete(run.linked_at_start, run.deletes + page_deletes, self._options.mass_delete_ratio)
        run.deletes += page_deletes
        bulk = [plan for plan in planned if bulk_eligible(plan.actions)]
        if bulk:
            results = await run.applier.apply_bulk(
                run.mailbox,
                run.ref.kind,
                [BulkPlan(plan.actions, plan.projection, plan.new_link) for plan in bulk],
                resolver=run.resolver,
            )
            await bounded_gather(
                self._park_or_raise(run, plan.item, result)
                if isinstance(result, CrmError)
                else self._guard(run, plan.item, self._applied(run, plan, result))
                for plan, result in zip(bulk, results, strict=True)
            )
            await self._keep_lease(run)
        for plan in planned:
            if not bulk_eligible(plan.actions):
                await self._guard(run, plan.item, self._apply(run, plan))
                await self._keep_lease(run)

    async def _guard(self, run: _Run, item: OutlookItem, step: Awaitable[_T]) -> _T | None:
        """Await ``step``; a CRM error retrying cannot fix parks the item (``None``), others raise."""
        try:
            return await step
        except CrmError as error:
            await self._park_or_raise(run, item, error)
            return None

    async def _park_or_raise(self, run: _Run, item: OutlookItem, error: CrmError) -> None:
        if error.retryable or isinstance(error, _FATAL_CRM_ERRORS):
            raise error
        await self._park(run, item, error)

    async def _prepare(self, run: _Run, items: list[OutlookItem]) -> list[_Prepared]:
        """Tracking verdicts, tracked mail bodies (batched), link rows and the CRM record each item
        maps to: everything planning needs, read a page at a time."""
        mailbox, kind = run.mailbox, run.ref.kind
        fmap = field_map(kind)
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
        wanted = [item.item_id for item, tracked in verdicts if tracked and isinstance(item.item, Email)]
        bodies = await self._reader.fetch_message_bodies(mailbox.mailbox_id, wanted) if wanted else {}
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
        linked = await bounded_gather(self._linked(run, item, tracked) for item, tracked in ready)
        return [entry for entry in linked if entry is not None]

    async def _linked(self, run: _Run, item: OutlookItem, tracked: bool) -> _Prepared | None:
        """The item with the link that holds it and the record it maps to; ``None``: nothing to do."""
        kind = run.ref.kind
        outlook = OutlookState.from_outlook_item(item, tracked=tracked)
        stored = await run.links.by_outlook(item.item_id)
        if stored is not None:
            link = from_stored_link(stored)
            return _Prepared(item, outlook, link, link.crm_id, own_link=True)
        if outlook.item is None or outlook.gone is not None:
            return None  # gone (or untracked) and never linked: nothing to do
        record_id = outlook.crm_id or crm_record_id(
            kind, natural_key(run.mailbox.mailbox_id, item.item_id, outlook.item)
        )
        # Another copy in this mailbox (a message sent to oneself: Sent Items and Inbox) may already
        # hold the record; the planner then skips this copy instead of fighting over it. Only emails
        # and meetings share ids across copies (internetMessageId, iCalUId).
        same = None
        if kind in _SHARED_NATURAL_KEYS:
            same = await run.links.by_crm(field_map(kind).table, str(record_id))
        copy = from_stored_link(same) if same is not None else None
        return _Prepared(item, outlook, copy, record_id, own_link=False)

    async def _verdict(self, run: _Run, item: OutlookItem) -> bool:
        """Whether the item takes part: the tracker's decision for mail, else the settings."""
        decision = await run.tracker.decide(item) if run.tracker is not None else None
        return decision.tracked if decision is not None else is_tracked(run.mailbox.settings, item)

    async def _read_crm_states(self, run: _Run, prepared: list[_Prepared]) -> dict[uuid.UUID, CrmState]:
        """The page's CRM records in one request; if the user may not read them all, item by item
        (so only the items concerned are parked)."""
        ids = list(dict.fromkeys(entry.record_id for entry in prepared if entry.record_id is not None))
        try:
            return await run.applier.read_crm_states(run.mailbox, run.ref.kind, ids)
        except CrmError as error:
            if error.retryable or isinstance(error, _FATAL_CRM_ERRORS):
                raise
        states: dict[uuid.UUID, CrmState] = {}
        for entry in prepared:
            if entry.record_id is not None and entry.record_id not in states:
                read = run.applier.read_crm_state(run.mailbox, run.ref.kind, entry.record_id)
                state = await self._guard(run, entry.item, read)
                if state is not None:
                    states[entry.record_id] = state
        return states

    async def _plan(self, run: _Run, entry: _Prepared, crm: CrmState | None) -> _Planned | None:
        mailbox, kind, item, outlook = run.mailbox, run.ref.kind, entry.item, entry.outlook
        if entry.own_link and crm is not None and outlook.gone is not None and self._left_window(kind, crm):
            return None
        actions = plan_item(
            kind,
            mailbox_id=mailbox.mailbox_id,
            outlook=outlook,
            link=entry.link,
            crm=crm,
            policy=sync_policy(mailbox.settings, kind),
            now=self._clock(),
        )
        if run.tracker is not None:
            actions = await run.tracker.review(item, actions)
        projection = field_map(kind).project(outlook.item).values if outlook.item is not None else {}
        return _Planned(item, actions, projection, new_link=entry.link is None)

    def _left_window(self, kind: ItemKind, crm: CrmState) -> bool:
        """A removed appointment whose record lies outside the calendar window left the window."""
        if kind is not ItemKind.APPOINTMENT or crm.values is None:
            return False
        start, end = self._window()
        scheduled_start, scheduled_end = (
            _utc_value(crm.values, c) for c in ("scheduledstart", "scheduledend")
        )
        return bool(
            (scheduled_end is not None and scheduled_end < start)
            or (scheduled_start is not None and scheduled_start > end)
        )

    async def _apply(self, run: _Run, plan: _Planned) -> None:
        applied = await run.applier.apply(
            run.mailbox, run.ref.kind, plan.actions, resolver=run.resolver, projection=plan.projection
        )
        await self._applied(run, plan, applied)

    async def _applied(self, run: _Run, plan: _Planned, applied: AppliedItem) -> None:
        """After one item's plan was applied: tracking, counts, and its parked entry (if any) goes."""
        run.links.forget(plan.actions, plan.item.item_id)
        if run.tracker is not None:
            await run.tracker.after_apply(plan.item, plan.actions)
        run.crm_writes += applied.crm_writes
        run.fitted += len(applied.fitted)
        # a link refresh alone (the echo of our own stamp) synchronised nothing
        if (
            applied.crm_writes
            or applied.outlook_writes
            or applied.unlinked
            or (applied.linked and plan.new_link)
        ):
            run.items_synced += 1
        if any(isinstance(a, UnlinkOnly) and a.kept is Side.OUTLOOK for a in plan.actions):
            await self._untrack_message(run, plan.item)
        if plan.item.item_id in run.parked_ids:
            await self._store.parked.remove(
                run.mailbox.mailbox_id, ItemRef(kind=run.ref.kind, outlook_id=plan.item.item_id)
            )
            run.parked_ids.discard(plan.item.item_id)

    async def _untrack_message(self, run: _Run, item: OutlookItem) -> None:
        """A tracked email whose CRM copy was deleted stays in Outlook, untracked: its tracked category
        goes, so the next change to the message (a read flag) does not create the CRM email again
        (the CRM's deletion stands, as the planner's delete policy says)."""
        if item.kind is not ItemKind.EMAIL:
            return
        tracked = run.mailbox.settings.tracked_category.casefold()
        kept = [category for category in item.categories if category.casefold() != tracked]
        if len(kept) != len(item.categories):
            await self._writer.set_message_categories(run.mailbox.mailbox_id, item.item_id, kept)

    async def _park(self, run: _Run, item: OutlookItem, error: CrmError) -> None:
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
        logger.warning("parked a %s item: %s (%s)", run.ref.kind.value, reason, error.code)

    async def _refuse(self, run: _Run, refused: MassDeleteRefusedError) -> None:
        mailbox_id = run.mailbox.mailbox_id
        logger.error("mass-delete brake: %s", refused)
        await self._store.registry.set_state(mailbox_id, MailboxState.DEGRADED)
        await self._store.sync_state.record_error(mailbox_id, run.resource, _MASS_DELETE_REASON)
        await self._audit(mailbox_id, AuditAction.STATE_CHANGED, run.ref.kind, _MASS_DELETE_REASON)

    async def _audit(self, mailbox_id: str, action: AuditAction, kind: ItemKind, reason: str) -> None:
        await self._store.audit.append(
            AuditRecord(
                mailbox_id=mailbox_id,
                actor=ACTOR,
                action=action,
                item_kind=kind,
                reason_code=reason,
            )
        )

    async def _keep_lease(self, run: _Run) -> None:
        """Renew the lease once half of it is used, so a long run keeps its mailbox."""
        lease = run.holder[0]
        if lease.expires_at - self._clock() < dt.timedelta(seconds=self._options.lease_seconds / 2):
            run.holder[0] = await self._store.sync_state.renew(lease, self._options.lease_seconds)


def _utc_value(values: Mapping[str, object], column: str) -> dt.datetime | None:
    value = values.get(column)
    return parse_utc(value) if isinstance(value, str) else None


__all__ = [
    "InvalidResource",
    "JobOptions",
    "MailboxSyncJob",
    "ProgressCallback",
    "ResourceRef",
    "RunOutcome",
    "SyncProgress",
    "SyncRunReport",
    "parse_resource",
]


def _combined(first: SyncRunReport, then: SyncRunReport) -> SyncRunReport:
    """Two rounds of one run as one report (counts added, the later outcome and message)."""
    return dataclasses.replace(
        then,
        full_resync=first.full_resync or then.full_resync,
        pages=first.pages + then.pages,
        items_seen=first.items_seen + then.items_seen,
        items_synced=first.items_synced + then.items_synced,
        crm_writes=first.crm_writes + then.crm_writes,
        parked=first.parked + then.parked,
        fitted=first.fitted + then.fitted,
    )
