"""Answering Graph's lifecycle notifications ("Reduce missing subscriptions and change
notifications", learn.microsoft.com/graph/change-notifications-lifecycle-events):

- ``reauthorizationRequired``: reauthorize the subscription (POST .../reauthorize) so
  notifications keep flowing; the access token Graph holds for it is about to expire;
- ``subscriptionRemoved``: Graph dropped the subscription; create a new one for the same
  resource and run a delta, because changes since the removal were not notified;
- ``missed``: some notifications were not delivered; run a delta (it is what it is for).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.domain.model import ItemKind
from shared.outlook.errors import ItemNotFound
from shared.outlook.notifications import LifecycleEvent
from shared.outlook.subscriptions import ResourceKind, SubscriptionManager
from shared.store.fingerprint import short_fingerprint
from shared.store.jobs import JobQueue, JobReason
from shared.store.ports import Store
from shared.store.records import SubscriptionRecord, hash_client_state
from shared.sync.intake import LifecycleWork, request_resync
from shared.sync.job import ResourceRef, parse_resource

log = logging.getLogger(__name__)

RESOURCE_OF_KIND = {
    ItemKind.EMAIL: ResourceKind.MESSAGES,
    ItemKind.CONTACT: ResourceKind.CONTACTS,
    ItemKind.APPOINTMENT: ResourceKind.EVENTS,
    ItemKind.TASK: ResourceKind.TASKS,
}


async def replace_subscription(
    store: Store, subscriptions: SubscriptionManager, old: SubscriptionRecord
) -> SubscriptionRecord:
    """Create a new subscription for ``old``'s resource and keep only the new record."""
    ref = parse_resource(old.mailbox_id, old.resource)
    record = await subscribe(store, subscriptions, old.mailbox_id, ref)
    await store.subscriptions.delete(old.subscription_id)
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


async def handle_lifecycle(
    work: list[LifecycleWork], *, store: Store, jobs: JobQueue, subscriptions: SubscriptionManager
) -> LifecycleOutcome:
    """Act on verified lifecycle notifications (see the module docstring)."""
    reauthorized = recreated = 0
    resync: list[tuple[str, str]] = []
    for item in work:
        record = item.subscription
        if item.event is LifecycleEvent.REAUTHORIZATION_REQUIRED:
            try:
                await subscriptions.reauthorize(record.subscription_id)
                reauthorized += 1
                continue
            except ItemNotFound:
                log.warning(
                    "subscription %s vanished before reauthorization; recreating",
                    short_fingerprint(record.subscription_id),
                )
        if item.event is not LifecycleEvent.MISSED:
            record = await replace_subscription(store, subscriptions, record)
            recreated += 1
        resync.append((record.mailbox_id, record.resource))
    enqueued = await request_resync(resync, store=store, jobs=jobs, reason=JobReason.RESYNC)
    return LifecycleOutcome(reauthorized, recreated, enqueued)
