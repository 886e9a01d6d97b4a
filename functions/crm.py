"""CRM -> Outlook triggers: the Dataverse webhook and the CRM work queue (the change-tracking timer
is in functions/timers.py).

The webhook is anonymous to the host: Dataverse's WebhookKey authentication sends the key as
``?code=``, checked in constant time against ``CRMSYNC_CRM_WEBHOOK_KEY`` by
``shared.sync.crm_intake`` (a wrong or missing key: 403; a body that is not a RemoteExecutionContext
of a table and message crmsync registers: 400 / 413; nothing queued). It answers 202 once the
table's change read is marked due (and queued, if the mark is new); storage failing, or not
answering within ``DEADLINE_SECONDS``: 503, so Dataverse's system job fails and shows it (the
change-tracking timer still carries the change).
"""

from __future__ import annotations

import asyncio
import logging

import azure.functions as func
from azure.core.exceptions import AzureError

from functions.webhooks import DEADLINE_SECONDS
from shared.runtime import get_runtime
from shared.sync.crm_intake import WebhookRejected, accept_webhook

bp = func.Blueprint()
log = logging.getLogger(__name__)
_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def _answer(status: int) -> func.HttpResponse:
    return func.HttpResponse("", status_code=status, mimetype="text/plain", headers=dict(_HEADERS))


@bp.route(route="crm/webhook", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def crm_webhook(req: func.HttpRequest) -> func.HttpResponse:
    """Queue routing work for one Dataverse event (see the module docstring)."""
    runtime = get_runtime()
    key = runtime.settings.crm_webhook_key
    try:
        async with asyncio.timeout(DEADLINE_SECONDS):
            await accept_webhook(
                req.get_body(),
                code=req.params.get("code"),
                expected_key=key.get_secret_value() if key is not None else None,
                store=await runtime.store(),
                queue=await runtime.crm_work(),
                declared_length=req.headers.get("content-length"),
            )
    except WebhookRejected as rejected:
        log.info("CRM webhook refused a call (%d)", rejected.status)
        return _answer(rejected.status)
    except (AzureError, TimeoutError):
        log.warning("CRM webhook: storage unavailable")
        return _answer(503)
    return _answer(202)


@bp.queue_trigger(arg_name="msg", queue_name="%CRMSYNC_JOB_QUEUE%-crm", connection="AzureWebJobsStorage")
async def crm_worker(msg: func.QueueMessage) -> None:
    """Route CRM changes to mailboxes, or run one mailbox's CRM -> Outlook sync (the engine is
    imported by the first message, not when the app is indexed)."""
    from shared.sync.crm_dispatch import run_crm_work

    runtime = get_runtime()
    outcome = await run_crm_work(
        msg.get_body(),
        router=await runtime.crm_routes(),
        runner=await runtime.crm_runs(),
        queue=await runtime.crm_work(),
        feed=await runtime.change_feed(),
    )
    log.info("CRM work %s (%d runs)", outcome.status, outcome.runs)
