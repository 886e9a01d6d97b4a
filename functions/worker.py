"""Queue-triggered workers: sync jobs (one message = one (mailbox, resource) delta run) and
lifecycle work (one message = one verified Graph lifecycle notification).

The sync engine is imported by the first message, not when the app is indexed: a cold instance
answers Graph's webhook first (shared.runtime)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.runtime import get_runtime

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.queue_trigger(arg_name="msg", queue_name="%CRMSYNC_JOB_QUEUE%", connection="AzureWebJobsStorage")
async def sync_worker(msg: func.QueueMessage) -> None:
    """Run the job; exceptions propagate so the host retries and finally poisons the message."""
    from shared.sync.dispatch import run_queued_job

    runtime = get_runtime()
    outcome = await run_queued_job(
        msg.get_body(),
        dequeue_count=msg.dequeue_count or 1,
        store=await runtime.store(),
        jobs=await runtime.jobs(),
        job_runner=await runtime.sync_job(),
    )
    log.info("sync job %s%s", outcome.status, f" ({outcome.reason})" if outcome.reason else "")


@bp.queue_trigger(
    arg_name="msg", queue_name="%CRMSYNC_JOB_QUEUE%-lifecycle", connection="AzureWebJobsStorage"
)
async def lifecycle_worker(msg: func.QueueMessage) -> None:
    """Reauthorize, recreate or resync as the queued lifecycle notification asks (idempotent per
    subscription and event); exceptions propagate so the host retries the message."""
    from shared.sync.lifecycle import run_lifecycle_job

    runtime = get_runtime()
    outcome = await run_lifecycle_job(
        msg.get_body(),
        store=await runtime.store(),
        jobs=await runtime.jobs(),
        subscriptions=await runtime.subscriptions(),
        on_stored=runtime.subscription_cache.forget,
    )
    log.info(
        "lifecycle: %d reauthorized, %d recreated, %d resyncs, %d ignored",
        outcome.reauthorized,
        outcome.recreated,
        outcome.resyncs_enqueued,
        outcome.ignored,
    )
