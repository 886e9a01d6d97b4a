"""What the notification webhook does, host-independent: verify, mark dirty, enqueue. No CRM work.

Graph gives a webhook 3 seconds ("Receive change notifications through webhooks": respond with
202 Accepted within 3 seconds, otherwise Graph retries and may drop the subscription's
notifications), and a notification only says "look": the queue worker's delta query finds out
what changed. So intake does the minimum, in this order, and changes nothing unless the whole
payload is genuine:

1. parse (size-capped, schema-checked) - :class:`NotificationRejected` -> 400;
2. find each subscription (a short-lived in-process cache saves a storage round trip per
   notification) and compare ``clientState`` in constant time, and ``tenantId`` - any mismatch
   rejects the payload (:class:`ForgedNotification` -> 403, nothing marked);
3. mark each (mailbox, resource) dirty, all targets concurrently; only the call that turned it
   dirty enqueues a job, so a burst of notifications becomes one delta run. In a burst that is one
   storage round trip per notification (the store's ``mark_dirty`` touches a row it left dirty).

Unknown subscription ids (e.g. deleted a moment ago, notifications still in flight) are counted
and ignored. Storage errors propagate so the webhook answers 5xx and Graph retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shared.outlook.notifications import (
    LifecycleEvent,
    LifecycleNotification,
    parse_lifecycle_notifications,
    parse_notifications,
)
from shared.store.errors import SubscriptionNotFound
from shared.store.fingerprint import short_fingerprint
from shared.store.jobs import JobQueue, JobReason, SyncJob
from shared.store.ports import Store
from shared.store.records import SubscriptionRecord, verify_client_state

log = logging.getLogger(__name__)


class ForgedNotification(PermissionError):
    """A notification whose clientState or tenant does not match its subscription."""


@dataclass(frozen=True)
class IntakeResult:
    """What one webhook call did (counts only: safe to log)."""

    notifications: int
    targets: int
    enqueued: int
    unknown_subscriptions: int


@dataclass
class SubscriptionCache:
    """Subscription records by id for ``ttl`` seconds: the webhook's hot path reads them constantly.

    Caching is safe because a subscription's clientState never changes under the same id (a
    recreated subscription has a new id); a deleted one may be served for up to ``ttl``, which
    at worst marks a mailbox dirty for a run that then finds nothing to do.
    """

    ttl: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, tuple[float, SubscriptionRecord]] = field(default_factory=dict)

    async def get(self, store: Store, subscription_id: str) -> SubscriptionRecord | None:
        now = self.clock()
        cached = self._entries.get(subscription_id)
        if cached and cached[0] > now:
            return cached[1]
        try:
            record = await store.subscriptions.get(subscription_id)
        except SubscriptionNotFound:
            self._entries.pop(subscription_id, None)
            return None
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[subscription_id] = (now + self.ttl, record)
        return record

    def forget(self, subscription_id: str) -> None:
        self._entries.pop(subscription_id, None)


async def _verified_records(
    notifications: Iterable[tuple[str, str | None, str]],
    *,
    store: Store,
    tenant_id: str,
    cache: SubscriptionCache,
) -> tuple[list[SubscriptionRecord], int]:
    """The subscription of each notification, all checked before anything is written."""
    items = list(notifications)
    unique_ids = sorted({subscription_id for subscription_id, _, _ in items})
    found = dict(
        zip(unique_ids, await asyncio.gather(*(cache.get(store, i) for i in unique_ids)), strict=True)
    )
    records: list[SubscriptionRecord] = []
    unknown = 0
    for subscription_id, client_state, notified_tenant in items:
        record = found[subscription_id]
        if record is None:
            unknown += 1
            continue
        if not verify_client_state(record, client_state) or not hmac.compare_digest(
            notified_tenant.lower(), tenant_id.lower()
        ):
            log.warning(
                "rejected a notification for subscription %s: clientState or tenant mismatch",
                short_fingerprint(subscription_id),
            )
            raise ForgedNotification("clientState or tenantId does not match the subscription")
        records.append(record)
    return records, unknown


async def _mark_and_enqueue(
    targets: Iterable[tuple[str, str]], *, store: Store, jobs: JobQueue, reason: JobReason
) -> int:
    async def one(mailbox_id: str, resource: str) -> int:
        if not await store.sync_state.mark_dirty(mailbox_id, resource):
            return 0
        try:
            await jobs.enqueue(SyncJob(mailbox_id=mailbox_id, resource=resource, reason=reason))
        except BaseException:
            # Un-mark, so Graph's retry of this notification turns it dirty again and enqueues.
            with contextlib.suppress(Exception):
                await store.sync_state.clear_dirty(await store.sync_state.get_state(mailbox_id, resource))
            raise
        return 1

    return sum(await asyncio.gather(*(one(m, r) for m, r in targets)))


async def accept_change_notifications(
    body: bytes,
    *,
    store: Store,
    jobs: JobQueue,
    tenant_id: str,
    max_bytes: int,
    cache: SubscriptionCache,
) -> IntakeResult:
    """Verify a change-notification payload and turn it into at most one job per (mailbox, resource)."""
    notifications = parse_notifications(body, max_bytes=max_bytes)
    records, unknown = await _verified_records(
        ((n.subscription_id, n.client_state, n.tenant_id) for n in notifications),
        store=store,
        tenant_id=tenant_id,
        cache=cache,
    )
    targets = sorted({(r.mailbox_id, r.resource) for r in records})
    enqueued = await _mark_and_enqueue(targets, store=store, jobs=jobs, reason=JobReason.NOTIFICATION)
    return IntakeResult(len(notifications), len(targets), enqueued, unknown)


@dataclass(frozen=True)
class LifecycleWork:
    """A verified lifecycle notification and the subscription it concerns."""

    event: LifecycleEvent
    subscription: SubscriptionRecord


async def verify_lifecycle_notifications(
    body: bytes, *, store: Store, tenant_id: str, max_bytes: int, cache: SubscriptionCache
) -> tuple[list[LifecycleWork], int]:
    """Parse and verify a lifecycle payload; the caller reauthorizes, recreates or resyncs."""
    notifications: list[LifecycleNotification] = parse_lifecycle_notifications(body, max_bytes=max_bytes)
    verified: list[LifecycleWork] = []
    unknown = 0
    for notification in notifications:
        records, missing = await _verified_records(
            [(notification.subscription_id, notification.client_state, notification.tenant_id)],
            store=store,
            tenant_id=tenant_id,
            cache=cache,
        )
        unknown += missing
        verified.extend(LifecycleWork(notification.lifecycle_event, record) for record in records)
    return verified, unknown


async def request_resync(
    targets: Iterable[tuple[str, str]], *, store: Store, jobs: JobQueue, reason: JobReason
) -> int:
    """Mark (mailbox, resource) pairs dirty and enqueue a job for each newly dirty one."""
    return await _mark_and_enqueue(sorted(set(targets)), store=store, jobs=jobs, reason=reason)
