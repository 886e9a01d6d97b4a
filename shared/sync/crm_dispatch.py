"""What the CRM -> Outlook queue worker and timer do, host-independent (functions/ only parses and calls).

A ``changes_due`` message reads its table's change tracking and routes what it lists in the
worker (:meth:`~shared.sync.crm_changes.ChangeFeed.read_due`). Any other message without a mailbox
is routing work (:class:`~shared.sync.routing.Router`); one with a mailbox is a run
(:class:`~shared.sync.crm_run.CrmToOutlookRun`). A mailbox lease still held after the run waited a
few seconds for it re-enqueues the run with a short delay; an unknown mailbox or a malformed
message is dropped with a log line. Dataverse throttling (service protection limits, 429) or
unavailability re-enqueues the work after the wait Dataverse asks for: it is not the message's
fault, and a poisoned delete would never come back (change tracking has already reported it). Any
other failure propagates so the queue retries (and finally poisons it - the change-tracking timer
and the next change of the record bring a change back: the failed run's records are forgotten by
routing's memory of queued runs, :mod:`shared.sync.crm_routed`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from shared.crm.errors import CrmError
from shared.store.crm_jobs import MAX_IDS, CrmWork, CrmWorkQueue, CrmWorkSource
from shared.store.errors import LeaseHeld, MailboxNotFound
from shared.store.fingerprint import short_fingerprint
from shared.store.jobs import InvalidJob
from shared.sync.crm_changes import ChangeFeed
from shared.sync.crm_run import CrmRunOutcome, CrmRunReport, CrmToOutlookRun
from shared.sync.routing import Router

log = logging.getLogger(__name__)
_R = TypeVar("_R")
LEASE_RETRY_DELAY_SECONDS = 2
THROTTLED_RETRY_SECONDS = 30  # when Dataverse names no wait (unavailable, timed out)
JOIN_SECONDS = 0.01  # how long a message waits for those handed in with it (see _join)


@dataclass(frozen=True, slots=True)
class CrmWorkOutcome:
    status: str  # read | routed | synced | requeued | dropped
    runs: int = 0
    report: CrmRunReport | None = None


@dataclass
class _Waiting(Generic[_R]):
    work: CrmWork
    done: asyncio.Future[_R] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class SharedRuns:
    """The runs one worker is handed at once for the same mailbox take its lease one after the
    other, and those of the same table become one run.

    Routing queues a run per change and mailbox (the webhook and change tracking each report it),
    and a run takes the mailbox lease: handled one by one, all but one of them met the lease held
    by their neighbour, went back on the queue and came round again - most of the worker's time
    (chaos seed 3: 3,701 requeues for 366 runs). Here a mailbox's messages wait in the worker for
    each other; the one whose turn it is runs the ids of every message of its table waiting
    (up to a message's ``MAX_IDS``), and those share its outcome: a report, or the error each of
    them then handles as its own (the lease held elsewhere: each is requeued). A message is
    completed only by its own handler, so a worker dying mid-run loses none of them."""

    def __init__(self, runner: CrmToOutlookRun) -> None:
        self.runner = runner
        self._waiting: dict[tuple[str, str], list[_Waiting[CrmRunReport]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def run(self, work: CrmWork) -> CrmRunReport:
        key = (work.mailbox_id or "", work.table)
        mine: _Waiting[CrmRunReport] = _Waiting(work)
        lock = self._locks.setdefault(key[0], asyncio.Lock())  # one lease per mailbox
        return await _join(self._waiting, key, mine, lock, lambda: self._lead(key, mine))

    async def _lead(self, key: tuple[str, str], mine: _Waiting[CrmRunReport]) -> None:
        batch, changed, deleted = _take(self._waiting, key, mine)
        merged = mine.work.model_copy(
            update={
                "changed": tuple(r for r in changed if r not in deleted),
                "deleted": tuple(deleted),
                "enqueued_at": min(b.work.enqueued_at for b in batch),  # latency from the oldest
            }
        )
        await _settle(batch, self.runner.run(merged))


class SharedRoutes:
    """The routing work one worker is handed at once for the same table is routed as one.

    Every change reaches routing alone (a Dataverse webhook call per record) and routing reads the
    changed records' owners and parties in one request per 50 records: one routing per message cost
    a Dataverse request per change (chaos seed 4 at 3,000 operations: 2,805 of crmsync's 7,550). Here
    a table's routing messages wait in the worker for the one routing at a time; the next routes the
    ids of every message waiting (up to a message's ``MAX_IDS``), and those share its outcome: the
    number of runs it queued, or the error each of them then handles as its own. A message is
    completed only by its own handler, so a worker dying mid-route loses none of them."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.routed = router.routed
        self._waiting: dict[str, list[_Waiting[int]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def route(self, work: CrmWork) -> int:
        mine: _Waiting[int] = _Waiting(work)
        lock = self._locks.setdefault(work.table, asyncio.Lock())
        return await _join(self._waiting, work.table, mine, lock, lambda: self._lead(work.table, mine))

    async def _lead(self, table: str, mine: _Waiting[int]) -> None:
        batch, changed, deleted = _take(self._waiting, table, mine)
        owners: dict[uuid.UUID, uuid.UUID] = {}
        for entry in batch:  # each webhook call's owner hint, for its own record
            owner = entry.work.owner
            owners |= {record_id: owner for record_id in entry.work.changed if owner is not None}
        merged = mine.work.model_copy(
            update={
                "changed": tuple(changed),
                "deleted": tuple(deleted),
                "owner": None,
                "enqueued_at": min(b.work.enqueued_at for b in batch),
            }
        )
        await _settle(batch, self.router.route(merged, owners=owners))


_K = TypeVar("_K")


async def _join(
    waiting: dict[_K, list[_Waiting[_R]]],
    key: _K,
    mine: _Waiting[_R],
    lock: asyncio.Lock,
    lead: Callable[[], Awaitable[None]],
) -> _R:
    """Wait under ``key`` for the lock; then lead (take the waiting messages and run them as one)
    unless the leader before took this message. A short pause first lets the messages the host
    handed in with this one join it: without it the first of a batch always went alone (chaos:
    2,217 routings for the CRM -> Outlook queue's backlog in the quiet of 3,000 operations)."""
    waiting.setdefault(key, []).append(mine)
    await asyncio.sleep(JOIN_SECONDS)
    async with lock:
        if not mine.done.done():
            await lead()
    return mine.done.result()


def _take(
    waiting: dict[_K, list[_Waiting[_R]]], key: _K, mine: _Waiting[_R]
) -> tuple[list[_Waiting[_R]], dict[uuid.UUID, None], dict[uuid.UUID, None]]:
    """``mine`` and the messages waiting under ``key`` whose ids fit one message with it (taken off
    the waiting list), and their changed and deleted ids."""
    batch = [mine]
    changed, deleted = dict.fromkeys(mine.work.changed), dict.fromkeys(mine.work.deleted)
    for other in [w for w in waiting.get(key, []) if w is not mine]:
        more_changed = changed | dict.fromkeys(other.work.changed)
        more_deleted = deleted | dict.fromkeys(other.work.deleted)
        if len(more_changed) > MAX_IDS or len(more_deleted) > MAX_IDS:
            break
        changed, deleted = more_changed, more_deleted
        batch.append(other)
    waiting[key] = [w for w in waiting.get(key, []) if all(w is not b for b in batch)]
    return batch, changed, deleted


async def _settle(batch: list[_Waiting[_R]], outcome: Awaitable[_R]) -> None:
    """Every message of the batch shares the outcome: the result, or the error each handles."""
    try:
        result = await outcome
    except Exception as error:
        for entry in batch:
            entry.done.set_exception(error)
        return
    for entry in batch:
        entry.done.set_result(result)


async def run_crm_work(
    body: bytes | str,
    *,
    router: Router | SharedRoutes,
    runner: CrmToOutlookRun | SharedRuns,
    queue: CrmWorkQueue,
    feed: ChangeFeed,
) -> CrmWorkOutcome:
    try:
        work = CrmWork.parse(body)
    except InvalidJob as exc:
        log.error("dropped a CRM work message: %s", exc)
        return CrmWorkOutcome("dropped")
    try:
        if work.source is CrmWorkSource.CHANGES_DUE:
            read = await feed.read_due(work.table, _routing(router, work))
            return CrmWorkOutcome("read", runs=read.runs if read is not None else 0)
        if work.mailbox_id is None:
            return CrmWorkOutcome("routed", runs=await router.route(work))
        report = await runner.run(work)
    except LeaseHeld:
        await queue.enqueue(work, delay_seconds=LEASE_RETRY_DELAY_SECONDS)
        return CrmWorkOutcome("requeued")
    except CrmError as error:
        if not error.retryable:
            _forget(router, work)
            raise
        delay = max(LEASE_RETRY_DELAY_SECONDS, math.ceil(error.retry_after or THROTTLED_RETRY_SECONDS))
        log.warning("CRM work requeued for %d s: %s", delay, type(error).__name__)
        await queue.enqueue(work, delay_seconds=delay)
        return CrmWorkOutcome("requeued")
    except MailboxNotFound:
        log.warning("dropped CRM work for unknown mailbox %s", short_fingerprint(work.mailbox_id or "-"))
        return CrmWorkOutcome("dropped")
    except Exception:
        _forget(router, work)
        raise
    if report.failed or report.outcome is not CrmRunOutcome.COMPLETED:
        _forget(router, work)
    return CrmWorkOutcome("synced", report=report)


def _routing(router: Router | SharedRoutes, due: CrmWork) -> Callable[[CrmWork], Awaitable[int]]:
    """Route a change read's work in this worker, continuing the webhook call's trace and latency."""

    async def route(work: CrmWork) -> int:
        traced = work.model_copy(update={"traceparent": due.traceparent, "enqueued_at": due.enqueued_at})
        return await router.route(traced)

    return route


def _forget(router: Router | SharedRoutes, work: CrmWork) -> None:
    """A run that failed (the queue may finally poison it), left records unsynced or did not sync
    at all (a disabled mailbox or kind, no privilege): the next report of its records (change
    tracking's) queues a run again."""
    if work.mailbox_id is not None:
        router.routed.forget(work.mailbox_id, work.table, work.changed)
