"""The per-mailbox Outlook -> CRM sync run (docs/ARCHITECTURE.md, data flow steps 2-5).

One run syncs one (mailbox, resource), where the resource is the subscription resource string of
:func:`shared.outlook.subscriptions.resource_path`. It:

The steps (a page's own work is :class:`shared.sync.page.PageSync`'s):

1. takes the mailbox lease (one synchronizing instance per mailbox), renewed in the background while
   the run works (:class:`~shared.sync.lease.LeaseKeeper`); a run that lost it stops before its next
   write, and each delta link is stored in one conditional write with the lease;
2. clears the dirty flag *before* reading, so a notification arriving during the run leaves a
   fresh mark (and a new job) instead of being swallowed;
3. reads the delta from the stored link ("Use delta query to track changes in Microsoft Graph
   data", learn.microsoft.com/graph/delta-query-overview) and, page by page: converts, asks the
   policies (:mod:`shared.sync.policies`), fetches the body of tracked mail only, plans each item
   against the link map (:func:`~shared.sync.planner.plan_item`), checks the mass-delete brake for
   the page, applies (:class:`~shared.sync.applier.Applier`: CRM, then Outlook, then link rows), and
   only then stores the page's next link (the final delta link at the end), so a crash re-runs at
   most one page and deterministic ids make the re-run harmless; contacts' and tasks' next page is
   read while this one is applied (:func:`~shared.sync.concurrency.read_ahead`);
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
window is ignored rather than deleting the CRM record. The window moves: its start is stored with
the link, and once it is ``calendar_slide`` (7 days) old the next round - the sweep timer runs
every resource every 15 minutes - reads a new baseline from today against the link map (events
that entered the window arrive; those that left it are skipped; unchanged ones are not rewritten).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from shared import telemetry
from shared.crm.port import CrmPort
from shared.domain.model import ItemKind
from shared.outlook.claim import ClaimGuard
from shared.outlook.delta import DeltaPage
from shared.outlook.errors import DeltaTokenExpired
from shared.outlook.mailbox import AttachmentReader
from shared.outlook.side import GraphOutlookSide
from shared.outlook.writers import OutlookWriter
from shared.store.errors import LeaseLost
from shared.store.jobs import SyncJob
from shared.store.ports import Store
from shared.store.records import AuditAction, AuditRecord, Lease, Mailbox, MailboxState, utc_now
from shared.sync import latency
from shared.sync.applier import ACTOR, Applier
from shared.sync.brake import BRAKE_REASON, MassDeleteRefusedError, deletes_within, hold, record_deletes
from shared.sync.claims import stop_if_taken_over
from shared.sync.concurrency import read_ahead
from shared.sync.crm_reads import crm_time_zone
from shared.sync.intake import take_mark
from shared.sync.lease import LEASE_POLL_SECONDS, LeaseKeeper, LeaseWaiters, acquire
from shared.sync.link_recovery import unlisted_creates
from shared.sync.links import LinkView, unseen_links
from shared.sync.page import PageSync, RunState
from shared.sync.parties import PartyResolver
from shared.sync.policies import kind_enabled
from shared.sync.ports import OutlookReader
from shared.sync.resources import InvalidResource, ResourceRef, delta_pages, parse_resource
from shared.sync.run import JobOptions, ProgressCallback, RunOutcome, SyncProgress, SyncRunReport, combined
from shared.sync.tracking import TrackingService

logger = logging.getLogger(__name__)

_MAX_ROUNDS = 10  # delta rounds one run takes while notifications keep the resource dirty
#: How long a queue job waits for this worker's other runs of its mailbox before it is requeued.
TURN_WAIT_SECONDS = 10.0
#: Kinds whose next delta page is read while this one is applied: their pages send Graph at most
#: one request at a time (Outlook writes), so with the read ahead the run stays well inside
#: Outlook's four concurrent requests per mailbox. Mail (body reads) and calendars (series
#: masters) send batches that use all four.
_READ_AHEAD = frozenset({ItemKind.CONTACT, ItemKind.TASK})


class MailboxSyncJob:
    """Runs Outlook -> CRM sync for one (mailbox, resource) at a time; safe to run concurrently
    (the lease admits one run per mailbox; others raise ``LeaseHeld`` and the queue retries)."""

    def __init__(
        self,
        *,
        store: Store,
        crm: CrmPort,
        reader: OutlookReader,
        writer: OutlookWriter,
        options: JobOptions | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        owner: str | None = None,
        tracking: TrackingService | None = None,
        mailbox_reads: AttachmentReader | None = None,
        claims: ClaimGuard | None = None,
        waiters: LeaseWaiters | None = None,
    ) -> None:
        self._store = store
        self._claims = claims
        self._waiters = waiters or LeaseWaiters()
        self._crm = crm
        self._reader = reader
        self._writer = writer
        self._options = options or JobOptions()
        self._clock = clock
        self._owner = owner or f"worker:{uuid.uuid4().hex}"
        self._tracking = tracking
        self._mailbox_reads = mailbox_reads
        self._pages_sync = PageSync(
            store=store,
            crm=crm,
            reader=reader,
            clock=clock,
            mass_delete_ratio=self._options.mass_delete_ratio,
            keep_lease=self._keep_lease,
        )

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
            mailbox_reads=self._mailbox_reads,
            claims=self._claims,
        )

    async def run_job(self, job: SyncJob, *, progress: ProgressCallback | None = None) -> SyncRunReport:
        async with latency.measured(self._store.sync_state, job.mailbox_id, self._clock):
            with telemetry.sync_run(
                mailbox=job.mailbox_id,
                reason=job.reason.value,
                enqueued_at=job.enqueued_at,
                parent=job.traceparent,
            ):
                return await self.run(job.mailbox_id, job.resource, progress=progress, skip_if_done=True)

    async def run(
        self,
        mailbox_id: str,
        resource: str,
        *,
        progress: ProgressCallback | None = None,
        full_resync: bool = False,
        wait_for_lease: bool = False,
        allow_deletes: int | None = None,
        skip_if_done: bool = False,
    ) -> SyncRunReport:
        """Sync one resource of one mailbox from its stored delta link (a full read if none).

        ``full_resync``: forget the delta link first (under the lease, so no concurrent run stores a
        newer one meanwhile) and re-read everything against the link map.
        ``wait_for_lease``: when a worker holds the mailbox (the echo of onboarding's own stamps, say),
        wait up to one lease period for it instead of raising ``LeaseHeld`` at once (for onboarding
        and admin commands); a queue job waits up to ``TURN_WAIT_SECONDS`` for this worker's other
        runs of the mailbox (:class:`~shared.sync.lease.LeaseWaiters`), then is requeued.
        ``skip_if_done``: a queue job ends there (``ALREADY_DONE``) when, while it waited for its
        turn, a round of this worker read its resource from start to end: that round began after the
        job's change was notified, so it read it. (A clean dirty flag says less: the run that
        cleared it may have died, and its retry may be this very job.)
        ``allow_deletes``: an administrator confirmed that many deletes (the brake's release); without
        it, a resource whose brake holds refused deletes is not read (they wait for the release)."""
        ref = parse_resource(mailbox_id, resource)
        mailbox = await self._store.registry.get_mailbox(mailbox_id)
        if not mailbox.enabled:
            return SyncRunReport(mailbox_id, resource, RunOutcome.MAILBOX_DISABLED)
        if holder := await stop_if_taken_over(self._store, self._claims, mailbox_id, resource):
            message = f"taken over by {holder.describe()}"
            return SyncRunReport(mailbox_id, resource, RunOutcome.MAILBOX_DISABLED, message=message)
        if not kind_enabled(mailbox.settings, ref.kind):
            return SyncRunReport(mailbox_id, resource, RunOutcome.KIND_DISABLED)
        asked = time.monotonic()
        async with self._waiters.turn(mailbox_id, wait=self._turn_wait(wait_for_lease)):
            if skip_if_done and self._waiters.read_since(mailbox_id, resource, asked):
                # A round of this worker started after this job's change and completed: it read it.
                return SyncRunReport(mailbox_id, resource, RunOutcome.ALREADY_DONE)
            lease = await self._lease(mailbox_id, wait=wait_for_lease)
            try:
                return await self._leased(
                    mailbox,
                    ref,
                    resource,
                    lease,
                    progress=progress,
                    full_resync=full_resync,
                    allow_deletes=allow_deletes,
                )
            finally:
                await lease.release()

    async def _leased(
        self,
        mailbox: Mailbox,
        ref: ResourceRef,
        resource: str,
        lease: LeaseKeeper,
        *,
        progress: ProgressCallback | None,
        full_resync: bool,
        allow_deletes: int | None,
    ) -> SyncRunReport:
        """The run once it holds the lease: its rounds, then the mailbox's other dirty resources."""
        mailbox_id = mailbox.mailbox_id
        state_store = self._store.sync_state
        refused = (await state_store.get_delete_log(mailbox_id, ref.kind)).refused
        if refused and allow_deletes is None:
            await take_mark(self._store, mailbox_id, resource)  # the release resyncs it in full
            message = f"the mass-delete brake holds {refused} refused deletes until released"
            return SyncRunReport(mailbox_id, resource, RunOutcome.MASS_DELETE_REFUSED, message=message)
        if full_resync:
            await state_store.reset(mailbox_id, resource)
        report = await self._round(mailbox, ref, resource, lease, progress, allow=allow_deletes)
        # Changes notified during the run left the resource dirty: take them now, under the
        # lease we hold, instead of leaving them to a job that waits for the lease to come free.
        # A CRM -> Outlook run waiting for the lease gets it now: those changes' jobs are queued.
        for _ in range(_MAX_ROUNDS - 1):
            if report.outcome is not RunOutcome.COMPLETED or self._waiters.waiting(mailbox_id):
                break
            if not (await state_store.get_state(mailbox_id, resource)).dirty:
                break
            again = await self._round(mailbox, ref, resource, lease, None, allow=allow_deletes)
            report = combined(report, again)
        if report.outcome is RunOutcome.COMPLETED and not self._waiters.waiting(mailbox_id):
            await self._other_dirty_resources(mailbox, resource, lease)
        return report

    async def _other_dirty_resources(self, mailbox: Mailbox, done: str, lease: LeaseKeeper) -> None:
        """The mailbox's other resources notified meanwhile, under the same lease: their own jobs,
        waiting for their turn, then end at once (``skip_if_done``); one round for all of them."""
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
            if (await self._store.sync_state.get_delete_log(mailbox_id, ref.kind)).refused:
                continue  # held by the brake until released
            try:
                await self._round(mailbox, ref, resource, lease, None, allow=None)
            except LeaseLost:
                raise  # the mailbox is another worker's now: stop
            except Exception as error:  # that resource's own queued job retries it
                logger.warning(
                    "a dirty %s resource failed under this lease: %s", ref.kind.value, type(error).__name__
                )

    async def run_items(self, mailbox_id: str, resource: str, item_ids: Sequence[str]) -> SyncRunReport:
        """A targeted run (a parked item's retry): read these items by id and take them through the
        page pipeline under the lease, as a delta page would bring them; the delta link stays."""
        ref = parse_resource(mailbox_id, resource)
        mailbox = await self._store.registry.get_mailbox(mailbox_id)
        async with self._waiters.turn(mailbox_id, wait=self._turn_wait(True)):
            lease = await self._lease(mailbox_id, wait=True)
            try:
                run = await self._start(mailbox, ref, resource, "", lease, allow=None)  # "": not a full read
                items = await self._reader.read_items(
                    mailbox_id, ref.kind, item_ids, task_list_id=ref.task_list_id, mailbox_address=mailbox.upn
                )
                run.items_seen = len(items)
                await self._pages_sync.process(run, items)
                return run.report(RunOutcome.COMPLETED)
            finally:
                await lease.release()

    def _turn_wait(self, wait_for_lease: bool) -> float:
        return self._options.lease_seconds + LEASE_POLL_SECONDS if wait_for_lease else TURN_WAIT_SECONDS

    async def _lease(self, mailbox_id: str, *, wait: bool) -> LeaseKeeper:
        lease = await self._acquire(mailbox_id, wait=wait)
        keeper = LeaseKeeper(self._store.sync_state, lease, self._options.lease_seconds, clock=self._clock)
        keeper.start()
        return keeper

    async def _acquire(self, mailbox_id: str, *, wait: bool) -> Lease:
        seconds = self._options.lease_seconds
        waiting = seconds + LEASE_POLL_SECONDS if wait else 0
        return await acquire(self._store.sync_state, mailbox_id, self._owner, seconds, wait=waiting)

    async def _round(
        self,
        mailbox: Mailbox,
        ref: ResourceRef,
        resource: str,
        lease: LeaseKeeper,
        progress: ProgressCallback | None,
        *,
        allow: int | None,
    ) -> SyncRunReport:
        """One delta round from the stored link; an expired token turns it into a full resync. A
        completed round is told to the worker's turns, so a job that waited meanwhile knows its
        change was read (``skip_if_done``)."""
        mailbox_id = mailbox.mailbox_id
        started = time.monotonic()
        state = await take_mark(self._store, mailbox_id, resource)  # before reading: see take_mark
        link, window_start = state.delta_link, state.window_start
        if link is not None and self._window_moves(ref, window_start):
            # A new baseline in the window from today: next year's occurrences come in, events that
            # left the window are skipped (left_window), unchanged ones are not rewritten (hashes).
            await self._audit(mailbox_id, AuditAction.RESYNC, ref.kind, "calendar_window_moved")
            link = window_start = None
        run = await self._start(mailbox, ref, resource, link, lease, allow=allow, window_start=window_start)
        try:
            report = await self._sync(run, link, progress)
        except DeltaTokenExpired:
            logger.warning("delta token expired for %s; full resync", ref.kind.value)
            await self._store.sync_state.reset(mailbox_id, resource)
            await self._audit(mailbox_id, AuditAction.RESYNC, ref.kind, "delta_token_expired")
            run = await self._start(mailbox, ref, resource, None, lease, allow=allow)
            report = await self._sync(run, None, progress)
        if report.outcome is RunOutcome.COMPLETED:
            self._waiters.note_read(mailbox_id, resource, started)
        return report

    async def _start(
        self,
        mailbox: Mailbox,
        ref: ResourceRef,
        resource: str,
        link: str | None,
        lease: LeaseKeeper,
        *,
        allow: int | None,
        window_start: dt.datetime | None = None,
    ) -> RunState:
        mailbox_id = mailbox.mailbox_id
        reads = self._mailbox_reads or (self._tracking.outlook if self._tracking is not None else None)
        outlook = GraphOutlookSide(self._writer, mailbox_id, reader=reads, task_list_id=ref.task_list_id)
        applier = Applier(
            crm=self._crm,
            links=self._store.links,
            audit=self._store.audit,
            mailbox=mailbox,
            kind=ref.kind,
            resolver=PartyResolver(self._crm, mailbox.crm_caller_object_id),
            outlook=outlook,
        )
        parked = {
            entry.ref.outlook_id
            async for entry in self._store.parked.list_parked(mailbox_id)
            if entry.ref.kind is ref.kind and entry.ref.outlook_id
        }
        links = LinkView(self._store.links, mailbox_id, ref.kind)
        if link is None:
            await links.preload()
            linked = len(links.loaded())
        else:
            linked = await self._store.links.count(mailbox_id, ref.kind)
        # The brake counts the deletes of the last 24 h too, against the links they were taken from
        # (a slow drain across runs trips it); a release's confirmed deletes are counted on their own.
        log = await self._store.sync_state.get_delete_log(mailbox_id, ref.kind)
        window = deletes_within(log, self._clock()) if allow is None else 0
        time_zone = await crm_time_zone(self._crm, mailbox, ref.kind)
        return RunState(
            mailbox=mailbox,
            ref=ref,
            resource=resource,
            full=link is None,
            links=links,
            linked_at_start=linked + window,
            deletes=window,
            allowed_deletes=allow,
            applier=applier,
            parked_ids=parked,
            lease=lease,
            window=self._window(window_start if link is not None else None),
            tracker=self._tracking.start(mailbox) if self._tracking and ref.kind is ItemKind.EMAIL else None,
            crm_time_zone=time_zone,
            find_created=functools.partial(
                self._writer.find_created, mailbox_id, ref.kind, task_list_id=ref.task_list_id
            ),
        )

    def _window(self, start: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
        """The calendar window: the stored link's (from its start), else one from now."""
        if start is None:
            start = self._clock() - self._options.calendar_past
        return start, start + self._options.calendar_past + self._options.calendar_future

    def _window_moves(self, ref: ResourceRef, start: dt.datetime | None) -> bool:
        """A calendar's window is renewed once it is ``calendar_slide`` old (or of unknown age)."""
        return ref.kind is ItemKind.APPOINTMENT and self._options.window_moves(start, self._clock())

    async def _sync(
        self, run: RunState, link: str | None, progress: ProgressCallback | None
    ) -> SyncRunReport:
        pages = delta_pages(self._reader, run.mailbox, run.ref, link, run.window)
        async with contextlib.aclosing(read_ahead(pages, ahead=run.ref.kind in _READ_AHEAD)) as ahead:
            return await self._apply_pages(run, ahead, progress)

    async def _apply_pages(
        self, run: RunState, pages: AsyncIterator[DeltaPage], progress: ProgressCallback | None
    ) -> SyncRunReport:
        mailbox_id = run.mailbox.mailbox_id
        async for page in pages:
            items = list(page.items)
            run.seen.update(item.item_id for item in items)
            if page.delta_link is not None and run.full:
                items += unseen_links(run.mailbox.mailbox_id, run.ref.kind, run.links.loaded(), run.seen)
            if page.delta_link is not None:
                items += await unlisted_creates(self._store.sync_state, self._reader, run)
            before = run.deletes
            try:
                await self._pages_sync.process(run, items)
            except MassDeleteRefusedError as refused:
                await self._refuse(run, refused)
                return run.report(RunOutcome.MASS_DELETE_REFUSED, str(refused))
            if run.allowed_deletes is None:
                await record_deletes(
                    self._store.sync_state, mailbox_id, run.ref.kind, run.deletes - before, self._clock()
                )
            next_link = page.next_link or page.delta_link
            if next_link:
                start = run.window[0] if run.ref.kind is ItemKind.APPOINTMENT else None
                await run.lease.save_delta_link(mailbox_id, run.resource, next_link, window_start=start)
            run.pages += 1
            run.items_seen += len(page.items)
            if progress is not None:
                progress(SyncProgress(run.resource, run.pages, run.items_seen, run.items_synced))
            await self._keep_lease(run)
        return run.report(RunOutcome.COMPLETED)

    async def _refuse(self, run: RunState, refused: MassDeleteRefusedError) -> None:
        mailbox_id = run.mailbox.mailbox_id
        logger.error("mass-delete brake: %s", refused)
        await hold(self._store.sync_state, mailbox_id, run.ref.kind, refused.refused)
        if run.full:
            # The pages before were stored: resuming from them would be an incremental read that
            # never redoes the unseen-link sweep, dropping the refused deletes. Start over instead.
            await self._store.sync_state.reset(mailbox_id, run.resource)
        await self._store.registry.set_state(mailbox_id, MailboxState.DEGRADED)
        await self._store.sync_state.record_error(mailbox_id, run.resource, BRAKE_REASON)
        # The number refused travels in the reason code: releasing the brake must name it.
        reason = f"{BRAKE_REASON}.{refused.refused}"
        await self._audit(mailbox_id, AuditAction.STATE_CHANGED, run.ref.kind, reason)

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

    @staticmethod
    async def _keep_lease(run: RunState) -> None:
        """Between steps (the background task renews meanwhile): stop if the lease is lost."""
        await run.lease.renew_if_half_used()


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
