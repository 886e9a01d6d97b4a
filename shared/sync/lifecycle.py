"""Answering Graph's lifecycle notifications ("Reduce missing subscriptions and change
notifications", learn.microsoft.com/graph/change-notifications-lifecycle-events):

- ``reauthorizationRequired``: reauthorize the subscription (POST .../reauthorize) so
  notifications keep flowing; the access token Graph holds for it is about to expire;
- ``subscriptionRemoved``: Graph dropped the subscription; create a new one for the same
  resource and run a delta, because changes since the removal were not notified;
- ``missed``: some notifications were not delivered; run a delta (it is what it is for).

The webhook only verifies and queues (:func:`enqueue_lifecycle_work`): creating a subscription
makes Graph validate the notification URL first, which alone can pass the webhook's 3 seconds,
and a late answer makes Graph retry. The lifecycle queue's worker (:func:`run_lifecycle_job`)
does the Graph calls. It is idempotent per (subscription id, event): the stored subscription
record is the source of truth, so a retried, duplicated or replayed message for a subscription
that was already replaced does nothing, and replacements of one mailbox's subscriptions are
serialized by a short storage lease (:func:`replace_subscription`), so two deliveries of one
``subscriptionRemoved`` create exactly one new subscription.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared.domain.model import ItemKind, UtcDatetime
from shared.outlook.errors import ItemNotFound
from shared.outlook.notifications import LifecycleEvent
from shared.outlook.subscriptions import ResourceKind, SubscriptionManager
from shared.store.errors import LeaseHeld, SubscriptionNotFound
from shared.store.fingerprint import short_fingerprint
from shared.store.jobs import InvalidJob, JobQueue, JobReason
from shared.store.ports import Store
from shared.store.records import SubscriptionRecord, hash_client_state, utc_now
from shared.sync.intake import LifecycleWork, request_resync
from shared.sync.job import ResourceRef, parse_resource

log = logging.getLogger(__name__)

RESOURCE_OF_KIND = {
    ItemKind.EMAIL: ResourceKind.MESSAGES,
    ItemKind.CONTACT: ResourceKind.CONTACTS,
    ItemKind.APPOINTMENT: ResourceKind.EVENTS,
    ItemKind.TASK: ResourceKind.TASKS,
}

LIFECYCLE_QUEUE_SUFFIX = "-lifecycle"
GUARD_SECONDS = 120
"""How long one replacement may hold a mailbox's subscription guard (a Graph create + validation)."""
GUARD_WAIT_SECONDS = 30.0


def lifecycle_queue_name(job_queue: str) -> str:
    """The lifecycle queue next to the job queue (the trigger binds ``%CRMSYNC_JOB_QUEUE%-lifecycle``)."""
    return job_queue + LIFECYCLE_QUEUE_SUFFIX


class LifecycleJob(BaseModel):
    """One verified lifecycle notification to act on; its key is (subscription id, event)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subscription_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    event: LifecycleEvent
    enqueued_at: UtcDatetime = Field(default_factory=utc_now)

    @classmethod
    def parse(cls, text: str | bytes) -> LifecycleJob:
        """Parse a (decoded) message; :class:`InvalidJob` naming the bad fields, never the content."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in e["loc"]) or "message" for e in exc.errors()})
            raise InvalidJob(f"not a lifecycle job: {', '.join(fields)}") from None


async def enqueue_lifecycle_work(work: list[LifecycleWork], *, queue: JobQueue) -> int:
    """Queue one :class:`LifecycleJob` per distinct (subscription, event); the webhook's whole job."""
    keys = sorted({(item.subscription.subscription_id, item.event) for item in work})
    jobs = [LifecycleJob(subscription_id=sid, event=event) for sid, event in keys]
    await asyncio.gather(*(queue.client.send_message(job.model_dump_json()) for job in jobs))
    return len(jobs)


@asynccontextmanager
async def _subscription_guard(store: Store, mailbox_id: str) -> AsyncIterator[None]:
    """Hold the mailbox's subscription guard: a lease of its own (key ``<mailbox>#subscriptions``),
    not the sync lease, so a long sync run never delays a replacement. Waits up to
    :data:`GUARD_WAIT_SECONDS`, then :class:`LeaseHeld` propagates (the queue retries)."""
    key, owner = f"{mailbox_id}#subscriptions", f"lifecycle-{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + GUARD_WAIT_SECONDS
    while True:
        try:
            lease = await store.sync_state.try_acquire(key, owner, GUARD_SECONDS)
            break
        except LeaseHeld:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)
    try:
        yield
    finally:
        await store.sync_state.release(lease)


async def _current(store: Store, mailbox_id: str, resource: str, not_id: str) -> SubscriptionRecord | None:
    """Another stored subscription of the mailbox for the same resource (a replacement), if any."""
    async for record in store.subscriptions.list_for_mailbox(mailbox_id):
        if record.resource == resource and record.subscription_id != not_id:
            return record
    return None


async def replace_subscription(
    store: Store,
    subscriptions: SubscriptionManager,
    old: SubscriptionRecord,
    *,
    on_stored: Callable[[str], None] | None = None,
) -> SubscriptionRecord:
    """The subscription that stands for ``old``'s resource after replacing it, created at most once.

    Under the mailbox's subscription guard: if ``old`` is no longer stored, someone replaced it
    already and that replacement is returned (:class:`SubscriptionNotFound` if the mailbox has none:
    it was removed); if a replacement is stored next to it (a crash before ``old`` was deleted), it
    is kept; otherwise a new subscription is created and stored, then ``old`` is deleted.
    ``on_stored`` hears each subscription id stored or deleted (the webhook's cache forgets it).
    """
    async with _subscription_guard(store, old.mailbox_id):
        try:
            await store.subscriptions.get(old.subscription_id)
        except SubscriptionNotFound:
            replacement = await _current(store, old.mailbox_id, old.resource, old.subscription_id)
            if replacement is None:
                raise
            return replacement
        record = await _current(store, old.mailbox_id, old.resource, old.subscription_id)
        if record is None:
            ref = parse_resource(old.mailbox_id, old.resource)
            record = await subscribe(store, subscriptions, old.mailbox_id, ref)
        await store.subscriptions.delete(old.subscription_id)
    if on_stored is not None:
        on_stored(record.subscription_id)
        on_stored(old.subscription_id)
    return record


async def subscribe(
    store: Store, subscriptions: SubscriptionManager, mailbox_id: str, ref: ResourceRef
) -> SubscriptionRecord:
    """Create a Graph subscription for one resource and store it (the clientState only as a hash)."""
    created = await subscriptions.create(
        mailbox_id,
        RESOURCE_OF_KIND[ref.kind],
        task_list_id=ref.task_list_id,
        mail_folder=ref.mail_folder or "inbox",
    )
    record = SubscriptionRecord(
        subscription_id=created.id,
        mailbox_id=mailbox_id,
        resource=created.resource,
        client_state_hash=hash_client_state(created.client_state),
        expiration=created.expires,
    )
    await store.subscriptions.put(record)
    return record


@dataclass(frozen=True)
class LifecycleOutcome:
    reauthorized: int = 0
    recreated: int = 0
    resyncs_enqueued: int = 0
    ignored: int = 0


async def run_lifecycle_job(
    message: str | bytes,
    *,
    store: Store,
    jobs: JobQueue,
    subscriptions: SubscriptionManager,
    on_stored: Callable[[str], None] | None = None,
) -> LifecycleOutcome:
    """Act on one queued lifecycle notification (see the module docstring). A subscription that is
    no longer stored (replaced, or its mailbox removed) is ignored: a replay changes nothing.
    Errors propagate, so the queue retries the message."""
    job = LifecycleJob.parse(message)
    try:
        record = await store.subscriptions.get(job.subscription_id)
    except SubscriptionNotFound:
        log.info(
            "lifecycle %s for subscription %s: no longer stored; nothing to do",
            job.event,
            short_fingerprint(job.subscription_id),
        )
        return LifecycleOutcome(ignored=1)
    recreated = 0
    if job.event is LifecycleEvent.REAUTHORIZATION_REQUIRED:
        try:
            await subscriptions.reauthorize(record.subscription_id)
            return LifecycleOutcome(reauthorized=1)
        except ItemNotFound:
            log.warning(
                "subscription %s vanished before reauthorization; recreating",
                short_fingerprint(record.subscription_id),
            )
    if job.event is not LifecycleEvent.MISSED:
        try:
            record = await replace_subscription(store, subscriptions, record, on_stored=on_stored)
        except SubscriptionNotFound:
            return LifecycleOutcome(ignored=1)
        recreated = 1
    enqueued = await request_resync(
        [(record.mailbox_id, record.resource)], store=store, jobs=jobs, reason=JobReason.RESYNC
    )
    return LifecycleOutcome(recreated=recreated, resyncs_enqueued=enqueued)
