"""What the CRM -> Outlook queue worker and timer do, host-independent (functions/ only parses and calls).

A message without a mailbox is routing work (:class:`~shared.sync.routing.Router`); one with a
mailbox is a run (:class:`~shared.sync.crm_run.CrmToOutlookRun`). As for the Outlook -> CRM jobs: a
held mailbox lease re-enqueues the run with a short delay; an unknown mailbox or a malformed message
is dropped with a log line. Dataverse throttling (service protection limits, 429) or unavailability
re-enqueues the work after the wait Dataverse asks for: it is not the message's fault, and a
poisoned delete would never come back (change tracking has already reported it). Any other failure
propagates so the queue retries (and finally poisons it - the change-tracking timer and the next
change of the record bring a change back).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from shared.crm.errors import CrmError
from shared.store.crm_jobs import CrmWork, CrmWorkQueue
from shared.store.errors import LeaseHeld, MailboxNotFound
from shared.store.fingerprint import short_fingerprint
from shared.store.jobs import InvalidJob
from shared.sync.crm_run import CrmRunReport, CrmToOutlookRun
from shared.sync.routing import Router

log = logging.getLogger(__name__)
LEASE_RETRY_DELAY_SECONDS = 2
THROTTLED_RETRY_SECONDS = 30  # when Dataverse names no wait (unavailable, timed out)


@dataclass(frozen=True, slots=True)
class CrmWorkOutcome:
    status: str  # routed | synced | requeued | dropped
    runs: int = 0
    report: CrmRunReport | None = None


async def run_crm_work(
    body: bytes | str, *, router: Router, runner: CrmToOutlookRun, queue: CrmWorkQueue
) -> CrmWorkOutcome:
    try:
        work = CrmWork.parse(body)
    except InvalidJob as exc:
        log.error("dropped a CRM work message: %s", exc)
        return CrmWorkOutcome("dropped")
    try:
        if work.mailbox_id is None:
            return CrmWorkOutcome("routed", runs=await router.route(work))
        report = await runner.run(work)
    except LeaseHeld:
        await queue.enqueue(work, delay_seconds=LEASE_RETRY_DELAY_SECONDS)
        return CrmWorkOutcome("requeued")
    except CrmError as error:
        if not error.retryable:
            raise
        delay = max(LEASE_RETRY_DELAY_SECONDS, math.ceil(error.retry_after or THROTTLED_RETRY_SECONDS))
        log.warning("CRM work requeued for %d s: %s", delay, type(error).__name__)
        await queue.enqueue(work, delay_seconds=delay)
        return CrmWorkOutcome("requeued")
    except MailboxNotFound:
        log.warning("dropped CRM work for unknown mailbox %s", short_fingerprint(work.mailbox_id or "-"))
        return CrmWorkOutcome("dropped")
    return CrmWorkOutcome("synced", report=report)
