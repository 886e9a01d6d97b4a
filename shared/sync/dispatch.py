"""What the queue worker and the timers do, host-independent (functions/ only parses and calls).

Failure semantics (docs/ARCHITECTURE.md, data flow step 4):

- a job for a mailbox whose lease another instance holds is re-enqueued with a short delay (the
  dirty flag stays set; nothing is lost and the queue's retry budget is not spent);
- a job for an unknown / offboarded mailbox, or a malformed message, is dropped with a log line:
  retrying cannot fix it;
- any other failure propagates, so the queue retries; on the last attempt before the message
  goes to the poison queue the mailbox is marked degraded (visible in ``crmsync status``). The
  delta link was not advanced, so the periodic sweep re-reads the change later: nothing is lost.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass

from shared.store.errors import LeaseHeld, MailboxNotFound
from shared.store.fingerprint import short_fingerprint
from shared.store.jobs import InvalidJob, JobQueue, JobReason, SyncJob
from shared.store.ports import Store
from shared.store.records import MailboxState
from shared.sync.intake import request_resync
from shared.sync.job import InvalidResource, MailboxSyncJob, RunOutcome, SyncRunReport

log = logging.getLogger(__name__)

#: host.json ``extensions.queues.maxDequeueCount``: the attempt after which the host poisons a message.
MAX_DEQUEUE_COUNT = 5
# The lease is per mailbox, so its other resources' jobs wait for the current run: retry soon.
LEASE_RETRY_DELAY_SECONDS = 2


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
        if (await store.registry.get_mailbox(job.mailbox_id)).state is MailboxState.DEGRADED:
            await store.registry.set_state(job.mailbox_id, MailboxState.ACTIVE)
    return JobOutcome("synced", report=report)


#: A dirty mark older than this has probably lost its job: the sweep enqueues one again.
STALE_DIRTY_AFTER = dt.timedelta(minutes=10)


async def sweep(store: Store, jobs: JobQueue, *, now: dt.datetime | None = None) -> int:
    """The safety net: ask for a delta run of every resource of every enabled mailbox.

    Catches lost notifications and runs that failed after clearing their dirty flag (their delta
    link was not advanced). A resource that is already dirty is normally being handled; but a mark
    older than :data:`STALE_DIRTY_AFTER` has probably lost its job (poisoned before the flag was
    cleared, a webhook whose un-mark failed, a mailbox disabled meanwhile), so it gets one again:
    jobs are idempotent, and without one the resource would stay blocked for good.
    """
    now = now or dt.datetime.now(dt.UTC)
    targets: list[tuple[str, str]] = []
    stale: list[tuple[str, str]] = []
    async for mailbox in store.registry.list_mailboxes(enabled_only=True):
        dirty = set(await store.sync_state.dirty_resources(mailbox.mailbox_id))
        async for record in store.subscriptions.list_for_mailbox(mailbox.mailbox_id):
            pair = (record.mailbox_id, record.resource)
            if record.resource not in dirty:
                targets.append(pair)
                continue
            state = await store.sync_state.get_state(*pair)
            if state.dirty and state.dirty_since is not None and now - state.dirty_since > STALE_DIRTY_AFTER:
                stale.append(pair)
    for mailbox_id, resource in stale:
        await jobs.enqueue(SyncJob(mailbox_id=mailbox_id, resource=resource, reason=JobReason.SWEEP))
        log.warning(
            "re-enqueued a job for a resource of mailbox %s dirty for too long", short_fingerprint(mailbox_id)
        )
    return len(stale) + await request_resync(targets, store=store, jobs=jobs, reason=JobReason.SWEEP)


def renewal_horizon(now: dt.datetime, *, hours: int = 36) -> dt.datetime:
    """Renew subscriptions expiring within ``hours``: well before expiry even if a few timer runs fail."""
    return now + dt.timedelta(hours=hours)
