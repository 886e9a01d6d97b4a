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
   dirty enqueues a job, so a burst of notifications becomes one delta run. Calls of one process
   for the same target share their mark (:class:`SharedMarks`): a burst costs a storage round trip
   per mark in flight, not per notification (the store's ``mark_dirty`` touches a row it left dirty).

Unknown subscription ids (e.g. deleted a moment ago, notifications still in flight) are counted
and ignored, and remembered briefly as misses (see :class:`SubscriptionCache`). Storage errors
propagate so the webhook answers 5xx and Graph retries; the webhook also bounds the whole call by
a deadline (a hanging storage answers 503 within Graph's 3 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from opentelemetry.trace import SpanKind

from shared import telemetry
from shared.outlook.notifications import (
    ChangeNotification,
    LifecycleEvent,
    LifecycleNotification,
    parse_lifecycle_notifications,
    parse_notifications,
)
from shared.store.errors import InvalidKey, SubscriptionNotFound
from shared.store.fingerprint import short_fingerprint
from shared.store.jobs import JobQueue, JobReason, SyncJob
from shared.store.ports import Store
from shared.store.records import SubscriptionRecord, SyncState, verify_client_state

log = logging.getLogger(__name__)

UNMARK_SECONDS = 0.5
"""How long a failed call may spend taking back its dirty mark (part of the webhook's 3 s)."""


class ForgedNotification(PermissionError):
    """A notification whose clientState or tenant does not match its subscription."""


@dataclass(frozen=True)
class IntakeResult:
    """What one webhook call did (counts only: safe to log)."""

    notifications: int
    targets: int
    enqueued: int
    unknown_subscriptions: int


_UNCACHED = object()


@dataclass
class SubscriptionCache:
    """Subscription records by id for ``ttl`` seconds, and unknown ids for ``miss_ttl`` seconds.

    The webhook's hot path reads subscriptions constantly. Caching a record is safe because a
    subscription's clientState never changes under the same id (a recreated subscription has a new
    id); a deleted one may be served for up to ``ttl``, which at worst marks a mailbox dirty for a
    run that then finds nothing to do.

    Unknown ids cost little, however many a caller sends:

    - a payload with at most ``point_reads`` ids not in the cache reads each (one round trip each,
      concurrently); one with more reads the whole subscriptions table instead (a few rows per
      mailbox, a page per 1,000), at most once per ``scan_interval`` seconds: the ids it lacks are
      unknown. So a POST of 1,000 random ids costs one scan, not 1,000 reads;
    - misses are remembered, so a replay costs nothing: apart from the records (an attacker's misses
      never evict a genuine subscription), at most ``max_misses`` (the oldest go first), and only
      for ``miss_ttl`` seconds: a subscription stored a moment after Graph created it (its first
      notification can beat the store's write) is recognised again after that, and every
      subscription crmsync creates is followed by a delta run that reads what such a notification
      said. :meth:`forget` drops both entries (this process stored or deleted the subscription).
    """

    ttl: float = 60.0
    miss_ttl: float = 15.0
    max_entries: int = 10_000
    max_misses: int = 10_000
    point_reads: int = 16
    scan_interval: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, tuple[float, SubscriptionRecord]] = field(default_factory=dict)
    _misses: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _scan: tuple[float, dict[str, SubscriptionRecord]] | None = None

    async def get(self, store: Store, subscription_id: str) -> SubscriptionRecord | None:
        return (await self.get_many(store, [subscription_id]))[subscription_id]

    async def get_many(self, store: Store, ids: Iterable[str]) -> dict[str, SubscriptionRecord | None]:
        """The record of each distinct id (``None``: unknown), from the cache or storage."""
        now = self.clock()
        found: dict[str, SubscriptionRecord | None] = {}
        wanted: list[str] = []
        for subscription_id in sorted(set(ids)):
            cached = self._cached(subscription_id, now)
            if cached is _UNCACHED:
                wanted.append(subscription_id)
            else:
                found[subscription_id] = cached  # type: ignore[assignment]
        if len(wanted) > self.point_reads:
            table = await self._table(store, now)
            fetched = [table.get(subscription_id) for subscription_id in wanted]
        else:
            fetched = list(await asyncio.gather(*(self._read(store, i) for i in wanted)))
        for subscription_id, record in zip(wanted, fetched, strict=True):
            self._remember(subscription_id, record, now)
            found[subscription_id] = record
        return found

    def _cached(self, subscription_id: str, now: float) -> SubscriptionRecord | object | None:
        """The cached record, ``None`` for a remembered miss, ``_UNCACHED`` if storage must say."""
        cached = self._entries.get(subscription_id)
        if cached and cached[0] > now:
            return cached[1]
        missed_until = self._misses.get(subscription_id)
        if missed_until is not None:
            if missed_until > now:
                return None
            del self._misses[subscription_id]
        return _UNCACHED

    async def _read(self, store: Store, subscription_id: str) -> SubscriptionRecord | None:
        try:
            return await store.subscriptions.get(subscription_id)
        except (SubscriptionNotFound, InvalidKey):
            return None

    async def _table(self, store: Store, now: float) -> dict[str, SubscriptionRecord]:
        """Every stored subscription by id, read at most once per ``scan_interval``."""
        if self._scan is None or self._scan[0] + self.scan_interval <= now:
            everything = dt.datetime.now(dt.UTC) + dt.timedelta(days=3650)
            records = {r.subscription_id: r async for r in store.subscriptions.list_expiring(everything)}
            self._scan = (now, records)
        return self._scan[1]

    def _remember(self, subscription_id: str, record: SubscriptionRecord | None, now: float) -> None:
        if record is not None:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[subscription_id] = (now + self.ttl, record)
            return
        self._entries.pop(subscription_id, None)
        self._misses[subscription_id] = now + self.miss_ttl
        self._misses.move_to_end(subscription_id)
        while len(self._misses) > self.max_misses:
            self._misses.popitem(last=False)

    def forget(self, subscription_id: str) -> None:
        self._entries.pop(subscription_id, None)
        self._misses.pop(subscription_id, None)
        self._scan = None


Target = tuple[str, str]
"""A (mailbox id, resource) pair."""


@dataclass
class SharedMarks:
    """Concurrent marks of one target in this process share one storage write (a group commit).

    A notification may be answered only by a mark that started after it arrived: a write already in
    flight may land before a worker's clear and the delta read that follows it, which then need not
    see this change. So a call joins the target's next mark if that has not started yet, else it
    queues one that starts when the running one ends; every call waiting on a mark gets its outcome
    (an error too: each answers 5xx and Graph retries each). A caller that stops waiting (the
    webhook's deadline) leaves the mark to the others; the last one cancels it and waits for its
    clean-up (the mark taken back), as a call of its own would. In a burst, with Graph posting
    dozens of notifications at once, this is a write per mark in flight instead of one each.
    """

    _waiting: dict[Target, asyncio.Task[int]] = field(default_factory=dict)
    _running: dict[Target, asyncio.Task[int]] = field(default_factory=dict)
    _callers: dict[asyncio.Task[int], int] = field(default_factory=dict)

    async def share(self, target: Target, mark: Callable[[], Awaitable[int]]) -> int:
        """``mark()``'s outcome, run by this call or shared with others of ``target`` that arrived
        before it started; the jobs it enqueued count for the call that started it, 0 for the rest."""
        shared = self._waiting.get(target)
        founder = shared is None
        if shared is None:
            shared = self._waiting[target] = asyncio.ensure_future(
                self._after(target, self._running.get(target), mark)
            )
        self._callers[shared] = self._callers.get(shared, 0) + 1
        try:
            jobs = await asyncio.shield(shared)
        except asyncio.CancelledError:
            if self._callers[shared] == 1 and not shared.done():
                shared.cancel()
                with contextlib.suppress(BaseException):
                    await shared
            raise
        finally:
            self._callers[shared] -= 1
            if not self._callers[shared]:
                del self._callers[shared]
        return jobs if founder else 0

    async def _after(
        self, target: Target, running: asyncio.Task[int] | None, mark: Callable[[], Awaitable[int]]
    ) -> int:
        this = asyncio.current_task()
        try:
            if running is not None:
                with contextlib.suppress(Exception):  # its outcome is its own callers'
                    await asyncio.shield(running)
        finally:
            if self._waiting.get(target) is this:
                del self._waiting[target]  # started (or given up): later calls wait for the next one
        self._running[target] = this  # type: ignore[assignment]
        try:
            return await mark()
        finally:
            if self._running.get(target) is this:
                del self._running[target]


async def _verified_records(
    notifications: Iterable[tuple[str, str | None, str]],
    *,
    store: Store,
    tenant_id: str,
    cache: SubscriptionCache,
) -> list[SubscriptionRecord | None]:
    """The subscription of each notification (``None``: unknown), all checked before anything is
    written; the lookups run concurrently (one read per distinct id not in the cache)."""
    items = list(notifications)
    found = await cache.get_many(store, (subscription_id for subscription_id, _, _ in items))
    expected_tenant = tenant_id.lower().encode()
    records: list[SubscriptionRecord | None] = []
    for subscription_id, client_state, notified_tenant in items:
        record = found[subscription_id]
        if record is not None and (
            not verify_client_state(record, client_state)
            or not hmac.compare_digest(notified_tenant.lower().encode(), expected_tenant)
        ):
            log.warning(
                "rejected a notification for subscription %s: clientState or tenant mismatch",
                short_fingerprint(subscription_id),
            )
            raise ForgedNotification("clientState or tenantId does not match the subscription")
        records.append(record)
    return records


async def _mark_and_enqueue(
    targets: Iterable[Target],
    *,
    store: Store,
    jobs: JobQueue,
    reason: JobReason,
    traceparent: str | None = None,
    marks: SharedMarks | None = None,
) -> int:
    async def mark(mailbox_id: str, resource: str) -> int:
        job = SyncJob(mailbox_id=mailbox_id, resource=resource, reason=reason, traceparent=traceparent)
        return await mark_then_enqueue(store, mailbox_id, resource, lambda: jobs.enqueue(job))

    async def one(mailbox_id: str, resource: str) -> int:
        if marks is None:
            return await mark(mailbox_id, resource)
        return await marks.share((mailbox_id, resource), lambda: mark(mailbox_id, resource))

    return sum(await asyncio.gather(*(one(m, r) for m, r in targets)))


async def mark_then_enqueue(
    store: Store, mailbox_id: str, resource: str, enqueue: Callable[[], Awaitable[None]]
) -> int:
    """Mark (mailbox, resource) dirty; only the call that turned it dirty enqueues its work (1 then,
    else 0). If that fails, the mark is taken back, so a retry of the notification marks and
    enqueues again."""
    newly_dirty: bool | None = None  # None: the mark's outcome is unknown
    try:
        newly_dirty = await store.sync_state.mark_dirty(mailbox_id, resource)
        if not newly_dirty:
            return 0
        await enqueue()
    except BaseException:
        if newly_dirty is not False:
            await _unmark(store, mailbox_id, resource)
        raise
    return 1


async def take_mark(store: Store, mailbox_id: str, resource: str, *, attempts: int = 5) -> SyncState:
    """Clear the dirty flag before reading; a notification in between wins the race (the flag's
    ETag changed): read it again. After ``attempts`` lost races the flag stays (the sweep or the
    next read takes it). The state as read last."""
    for _ in range(attempts):
        state = await store.sync_state.get_state(mailbox_id, resource)
        if not state.dirty or await store.sync_state.clear_dirty(state):
            return state
    return await store.sync_state.get_state(mailbox_id, resource)


async def _unmark(store: Store, mailbox_id: str, resource: str) -> None:
    """Clear a dirty flag this call may have set without a job, so Graph's retry of the notification
    (the webhook answered 5xx) turns it dirty again and enqueues. Bounded by
    :data:`UNMARK_SECONDS`, also when the webhook's deadline cancelled the call: storage that hangs
    must not hold the answer. If it fails the flag stays without a job; the sweep finds such rows."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(UNMARK_SECONDS):
            await store.sync_state.clear_dirty(await store.sync_state.get_state(mailbox_id, resource))


async def accept_change_notifications(
    body: bytes,
    *,
    store: Store,
    jobs: JobQueue,
    tenant_id: str,
    max_bytes: int,
    cache: SubscriptionCache,
    marks: SharedMarks | None = None,
) -> IntakeResult:
    """Verify a change-notification payload and turn it into at most one job per (mailbox, resource)."""
    notifications = parse_notifications(body, max_bytes=max_bytes)
    return await accept_notifications(
        notifications, store=store, jobs=jobs, tenant_id=tenant_id, cache=cache, marks=marks
    )


async def accept_notifications(
    notifications: list[ChangeNotification],
    *,
    store: Store,
    jobs: JobQueue,
    tenant_id: str,
    cache: SubscriptionCache,
    marks: SharedMarks | None = None,
) -> IntakeResult:
    """:func:`accept_change_notifications` for a payload already parsed (the webhook parses before it
    opens storage, so bad input gets its 400 whatever the storage does). ``marks``: the process's
    :class:`SharedMarks` (without: a storage write per target and call)."""
    found = await _verified_records(
        ((n.subscription_id, n.client_state, n.tenant_id) for n in notifications),
        store=store,
        tenant_id=tenant_id,
        cache=cache,
    )
    targets = sorted({(r.mailbox_id, r.resource) for r in found if r is not None})
    with telemetry.span("notification", kind=SpanKind.SERVER, notifications=len(notifications)):
        enqueued = await _mark_and_enqueue(
            targets,
            store=store,
            jobs=jobs,
            reason=JobReason.NOTIFICATION,
            traceparent=telemetry.traceparent(),
            marks=marks,
        )
    return IntakeResult(len(notifications), len(targets), enqueued, found.count(None))


@dataclass(frozen=True)
class LifecycleWork:
    """A verified lifecycle notification and the subscription it concerns."""

    event: LifecycleEvent
    subscription: SubscriptionRecord


async def verify_lifecycle_notifications(
    body: bytes, *, store: Store, tenant_id: str, max_bytes: int, cache: SubscriptionCache
) -> tuple[list[LifecycleWork], int]:
    """Parse and verify a lifecycle payload: the verified work (one per distinct subscription and
    event) and the number of notifications for unknown subscriptions."""
    notifications = parse_lifecycle_notifications(body, max_bytes=max_bytes)
    return await verify_lifecycle(notifications, store=store, tenant_id=tenant_id, cache=cache)


async def verify_lifecycle(
    notifications: list[LifecycleNotification], *, store: Store, tenant_id: str, cache: SubscriptionCache
) -> tuple[list[LifecycleWork], int]:
    """:func:`verify_lifecycle_notifications` for a payload already parsed."""
    found = await _verified_records(
        ((n.subscription_id, n.client_state, n.tenant_id) for n in notifications),
        store=store,
        tenant_id=tenant_id,
        cache=cache,
    )
    work: dict[tuple[str, LifecycleEvent], LifecycleWork] = {}
    for notification, record in zip(notifications, found, strict=True):
        if record is not None:
            key = (record.subscription_id, notification.lifecycle_event)
            work.setdefault(key, LifecycleWork(notification.lifecycle_event, record))
    return list(work.values()), found.count(None)


async def request_resync(
    targets: Iterable[tuple[str, str]], *, store: Store, jobs: JobQueue, reason: JobReason
) -> int:
    """Mark (mailbox, resource) pairs dirty and enqueue a job for each newly dirty one."""
    return await _mark_and_enqueue(sorted(set(targets)), store=store, jobs=jobs, reason=reason)
