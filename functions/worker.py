"""The queue-triggered sync worker: one message = one (mailbox, resource) delta run."""

from __future__ import annotations

import azure.functions as func

from shared.runtime import get_runtime
from shared.sync.dispatch import run_queued_job

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name="%CRMSYNC_JOB_QUEUE%", connection="AzureWebJobsStorage")
async def sync_worker(msg: func.QueueMessage) -> None:
    """Run the job; exceptions propagate so the host retries and finally poisons the message."""
    runtime = get_runtime()
    await run_queued_job(
        msg.get_body(),
        dequeue_count=msg.dequeue_count or 1,
        store=await runtime.store(),
        jobs=await runtime.jobs(),
        job_runner=await runtime.sync_job(),
    )
