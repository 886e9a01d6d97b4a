"""What the queue worker and the timers do, host-independent (functions/ only parses and calls).

Failure semantics (docs/ARCHITECTURE.md, data flow step 4):

- a job for a mailbox whose lease another instance holds is re-enqueued with a short delay (the
  dirty flag stays set; nothing is lost and the queue's retry budget is not spent);
- a job Dataverse throttled (service protection limits, 429; crmsync's one application user shares
  them across every mailbox) is re-enqueued after the wait Dataverse names, as CRM -> Outlook work
  is: the limit is not the job's fault, and spending its attempts on it degraded a mailbox under
  load (chaos seed 4);
- a job for an unknown / offboarded mailbox, or a malformed message, is dropped with a log line:
  retrying cannot fix it;
- any other failure propagates, so the queue retries; on the last attempt before the message
  goes to the poison queue the mailbox is marked degraded (visible in ``crmsync status``). The
  delta link was not advanced, so the periodic sweep re-reads the change later: nothing is lost.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from shared.crm.errors import ServiceProtectionLimit
from shared.domain.model import ItemKind
from shared.store.errors import LeaseHeld, MailboxNotFound
from shared.store.fingerprint import short_fingerprint
from shared.store.jobs import InvalidJob, JobQueue, JobReason, SyncJob
from shared.store.ports import Store
from shared.store.records import DirtyMark, Mailbox, MailboxState, SyncState, utc_now
from shared.sync.brake import held as brakes_held
from shared.sync.concurrency import bounded_gather
from shared.sync.intake import request_resync
from shared.sync.job import InvalidResource, MailboxSyncJob, RunOutcome, SyncRunReport
from shared.sync.policies import kind_enabled
from shared.sync.resources import parse_resource
from shared.sync.run import JobOptions

log = logging.getLogger(__name__)

#: host.json ``extensions.queues.maxDequeueCount``: the attempt after which the host poisons a message.
MAX_DEQUEUE_COUNT = 5
#: A resource dirty this long has probably lost its job (jobs normally finish within seconds).
STALE_AFTER = STALE_DIRTY_AFTER = dt.timedelta(minutes=10)
#: The longest pause between two sweep jobs of a resource that stays dirty.
MAX_SWEEP_GAP = dt.timedelta(hours=1)
#: How often the sweep checks a mailbox for changes a lost notification hid (with a 15-minute
#: timer: every 45 to 60 minutes).
SAFETY_READ_EVERY = dt.timedelta(minutes=45)
# The lease is per mailbox, so its other resources' jobs wait for the current run: retry soon.
LEASE_RETRY_DELAY_SECONDS = 2
THROTTLED_RETRY_SECONDS = 30  # when Dataverse names no wait


@dataclass(frozen=True)
class JobOutcome:
    """What happened to one queue message (safe to log: ids are fingerprinted)."""

    status: str  # synced | requeued | dropped
    report: SyncRunReport | None = None
    reason: str | None = None


async def run_queued_job(
    body: bytes,
    *,
    dequeue_count: int,
    store: Store,
    jobs: JobQueue,
    job_runner: MailboxSyncJob,
) -> JobOutcome:
    """Run one queued sync job with the semantics in the module docstring."""
    try:
        job = SyncJob.parse(body)
    except InvalidJob as exc:
        log.error("dropped a queue message that is not a sync job: %s", exc)
        return JobOutcome("dropped", reason="invalid_job")
    try:
        report = await job_runner.run_job(job)
    except LeaseHeld:
        await jobs.enqueue(job, delay_seconds=LEASE_RETRY_DELAY_SECONDS)
        return JobOutcome("requeued", reason="lease_held")
    except ServiceProtectionLimit as error:
        delay = max(LEASE_RETRY_DELAY_SECONDS, math.ceil(error.retry_after or THROTTLED_RETRY_SECONDS))
        log.warning("sync job requeued for %d s: Dataverse service protection limits", delay)
        await jobs.enqueue(job, delay_seconds=delay)
        return JobOutcome("requeued", reason="throttled")
    except (MailboxNotFound, InvalidResource) as exc:
        log.warning("dropped a job for mailbox %s: %s", short_fingerprint(job.mailbox_id), type(exc).__name__)
        return JobOutcome("dropped", reason=type(exc).__name__)
    except Exception:
        if dequeue_count >= MAX_DEQUEUE_COUNT:
            log.error(
                "mailbox %s degraded: its sync job failed %d times",
                short_fingerprint(job.mailbox_id),
                dequeue_count,
            )
            try:
                await store.registry.set_state(job.mailbox_id, MailboxState.DEGRADED)
            except Exception:
                log.exception("could not mark the mailbox degraded")
        raise
    if report.outcome is RunOutcome.MASS_DELETE_REFUSED:
        # The brake degraded the mailbox: it stays so until an administrator releases it.
        return JobOutcome("synced", report=report)
    with contextlib.suppress(MailboxNotFound):  # offboarded meanwhile: nothing to restore
        # A brake held on another resource of the mailbox keeps it degraded too.
        if (
            report.outcome is RunOutcome.COMPLETED
            and (await store.registry.get_mailbox(job.mailbox_id)).state is MailboxState.DEGRADED
            and not await brakes_held(store.sync_state, job.mailbox_id)
        ):
            await store.registry.set_state(job.mailbox_id, MailboxState.ACTIVE)
    return JobOutcome("synced", report=report)


class ChangeProbe(Protocol):
    """Which of a mailbox's resources have changes waiting behind their delta links
    (:class:`shared.outlook.probe.DeltaProbe`: one Graph ``$batch`` per mailbox)."""

    async def changed(self, delta_links: Mapping[str, str]) -> set[str]: ...


async def _index_links(store: Store, mailbox_id: str) -> None:
    """Links written before routing's index are indexed once (``indexed`` is cached once true)."""
    if not await store.links.indexed(mailbox_id):
        log.info("indexed %d link(s) of a mailbox for routing", await store.links.reindex(mailbox_id))


async def sweep(
    store: Store,
    jobs: JobQueue,
    *,
    probe: ChangeProbe | None = None,
    now: dt.datetime | None = None,
    stale_after: dt.timedelta = STALE_AFTER,
    safety_every: dt.timedelta = SAFETY_READ_EVERY,
) -> int:
    """The safety net, run every 15 minutes: stale dirty marks get a job again, and each mailbox's
    resources are checked for changes a lost notification hid once per ``safety_every``.

    Stale marks: a resource dirty for longer than ``stale_after`` may have lost its job (poisoned
    before the run cleared the flag, a webhook whose un-mark failed, a run that lost every race to
    clear it, a job that found its mailbox disabled), so it gets one again, whoever made it dirty:
    runs are idempotent. To keep a backlog from growing, a stale mark gets another job only after a
    pause that doubles with its age (``stale_after`` at first, at most :data:`MAX_SWEEP_GAP`),
    recorded on the mark itself.

    Safety read: every ``safety_every`` (45 minutes) a mailbox's clean resources' delta links are
    asked by ``probe`` whether anything changed, all in one Graph request; only those with changes
    (or no delta link yet) are marked dirty and get a job. Each mailbox has its own phase
    (:func:`safety_tick`), so a timer run checks about a third of the mailboxes, and a change whose
    notification was lost is found within 45 minutes plus one timer period (60 minutes with the
    15-minute timer). At rest that is 1.33 Graph requests per mailbox per hour, and no job. A new
    mailbox is checked by the next run. Without a probe every clean resource gets a job, as a run
    would find out the same.
    """
    now = now or utc_now()
    mailboxes = {m.mailbox_id: m async for m in store.registry.list_mailboxes(enabled_only=True)}
    await bounded_gather(_index_links(store, mailbox_id) for mailbox_id in mailboxes)
    stale = [
        mark
        async for mark in store.sync_state.list_dirty()
        if mark.mailbox_id in mailboxes
        and _wanted(mailboxes[mark.mailbox_id], mark.resource)
        and _due(mark, now, stale_after)
    ]
    enqueued = 0
    for mark in stale:  # before the marks below: their touch changes a stale mark's ETag
        if await store.sync_state.note_swept(mark, now):
            await jobs.enqueue(
                SyncJob(mailbox_id=mark.mailbox_id, resource=mark.resource, reason=JobReason.SWEEP)
            )
            enqueued += 1
    if enqueued:
        log.warning("sweep re-enqueued %d resource(s) dirty for over %s", enqueued, stale_after)
    # One listing of every subscription: a query per mailbox would scan the table once per mailbox.
    resources: dict[str, list[str]] = {}
    async for record in store.subscriptions.list_all():
        if record.mailbox_id in mailboxes:
            resources.setdefault(record.mailbox_id, []).append(record.resource)

    async def safety_read(mailbox_id: str) -> list[tuple[str, str]]:
        last = await store.sync_state.last_safety_read(mailbox_id)
        if last is not None and last >= safety_tick(mailbox_id, now, safety_every):
            return []
        states = [await store.sync_state.get_state(mailbox_id, r) for r in resources[mailbox_id]]
        # No delta link yet, or a calendar window due to move (a run moves it): a run, not a probe.
        unread = [
            s.resource
            for s in states
            if not s.dirty and (s.delta_link is None or _window_due(mailbox_id, s, now))
        ]
        links = {
            s.resource: s.delta_link
            for s in states
            if not s.dirty and s.delta_link is not None and s.resource not in unread
        }
        changed = set(links) if probe is None else await probe.changed(links)
        await store.sync_state.note_safety_read(mailbox_id, now)
        return [(mailbox_id, resource) for resource in [*unread, *sorted(changed)]]

    due = await bounded_gather(safety_read(mailbox_id) for mailbox_id in sorted(resources))
    targets = [target for found in due for target in found]
    return enqueued + await request_resync(targets, store=store, jobs=jobs, reason=JobReason.SWEEP)


def safety_tick(mailbox_id: str, now: dt.datetime, every: dt.timedelta = SAFETY_READ_EVERY) -> dt.datetime:
    """The latest moment at or before ``now`` when the mailbox's safety read fell due: every
    ``every`` from an offset its id hashes to, so the mailboxes' reads spread over the period."""
    period = int(every.total_seconds())
    offset = int.from_bytes(hashlib.sha256(mailbox_id.encode()).digest()[:8], "big") % period
    since = int((now - _EPOCH).total_seconds()) - offset
    return _EPOCH + dt.timedelta(seconds=since - since % period + offset)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _window_due(mailbox_id: str, state: SyncState, now: dt.datetime) -> bool:
    """A calendar whose window is due to move (the run reading it moves it: MailboxSyncJob)."""
    try:
        kind = parse_resource(mailbox_id, state.resource).kind
    except InvalidResource:
        return False
    return kind is ItemKind.APPOINTMENT and JobOptions().window_moves(state.window_start, now)


def _wanted(mailbox: Mailbox, resource: str) -> bool:
    """A resource a run would sync (a disabled kind's job returns at once, leaving its mark)."""
    try:
        return kind_enabled(mailbox.settings, parse_resource(mailbox.mailbox_id, resource).kind)
    except InvalidResource:
        return False


def _due(mark: DirtyMark, now: dt.datetime, stale_after: dt.timedelta) -> bool:
    """Dirty for ``stale_after`` and not swept within the pause its age allows (see :func:`sweep`)."""
    age = now - mark.dirty_since
    if age < stale_after:
        return False
    if mark.swept_at is None:
        return True
    return now - mark.swept_at >= min(max(stale_after, age / 2), MAX_SWEEP_GAP)


def renewal_horizon(now: dt.datetime, *, hours: int = 36) -> dt.datetime:
    """Renew subscriptions expiring within ``hours``: well before expiry even if a few timer runs fail."""
    return now + dt.timedelta(hours=hours)
