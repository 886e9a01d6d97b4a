"""Graph's two webhooks: change notifications and lifecycle notifications.

Both are anonymous HTTP functions (Graph cannot send a function key); authenticity comes from
the per-subscription clientState, checked in constant time in ``shared.sync.intake``. What they
answer ("Receive change notifications through webhooks", learn.microsoft.com/graph/
change-notifications-delivery-webhooks: Graph counts any 2xx as delivered and retries anything
else for up to 4 hours; it expects an answer within 3 seconds):

- ``?validationToken=``: the token echoed, 200 ``text/plain`` (only a sane token, see
  ``shared.outlook.notifications.validation_token``; else 400 and nothing reflected);
- a body declared (``Content-Length``) or read over the cap: 413, not parsed;
- a payload that is not a notification collection of Graph's documented shape (bad JSON, wrong
  types, missing fields, a subscriptionId or tenantId that is not a Guid, so never a storage key
  built from it): 400 naming the field, nothing stored or queued. Graph never sends such a payload;
- a clientState or tenant that does not match its subscription: 403, nothing stored or queued;
- storage failing or not answering within :data:`DEADLINE_SECONDS`: 503, so Graph retries;
- otherwise 202 (notifications for unknown subscriptions are acknowledged and ignored).

Every answer carries ``X-Content-Type-Options: nosniff``. Logs name the webhook and counts only,
never the request URL (its query string is the caller's) or the payload.

Body size: the Python worker gets the request from the Functions host only after the host has
read the whole body (up to its limit, the ``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT`` app setting, 100 MB
by default; host.json has no such setting). So the ``Content-Length`` check here spares the worker
copying and parsing a large body, not the host reading it: set ``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT``
to bound that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import azure.functions as func
from azure.core.exceptions import AzureError

from shared.outlook.notifications import (
    NotificationRejected,
    PayloadTooLarge,
    check_declared_length,
    parse_lifecycle_notifications,
    parse_notifications,
    validation_token,
)
from shared.runtime import Runtime, get_runtime
from shared.sync.intake import ForgedNotification, accept_notifications, verify_lifecycle

bp = func.Blueprint()
log = logging.getLogger(__name__)

DEADLINE_SECONDS = 2.0
"""The storage work of one call ends by then (a failed call then spends up to
``shared.sync.intake.UNMARK_SECONDS`` taking its mark back): 503 well within Graph's 3 s."""
_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def _text(status: int, body: str = "") -> func.HttpResponse:
    return func.HttpResponse(body, status_code=status, mimetype="text/plain", headers=dict(_HEADERS))


async def _answer(
    req: func.HttpRequest, webhook: str, handle: Callable[[Runtime, bytes], Awaitable[str]]
) -> func.HttpResponse:
    """The part both webhooks share (see the module docstring); ``handle`` returns a log line of
    counts only."""
    try:
        token = validation_token(req.params)
        if token is not None:
            return _text(200, token)
        runtime = get_runtime()
        max_bytes = runtime.settings.max_notification_bytes
        check_declared_length(req.headers.get("content-length"), max_bytes=max_bytes)
        body = req.get_body()
        async with asyncio.timeout(DEADLINE_SECONDS):
            summary = await handle(runtime, body)
    except PayloadTooLarge as exc:
        return _text(413, f"rejected: {exc.reason}")
    except NotificationRejected as exc:
        return _text(400, f"rejected: {exc.reason}")
    except ForgedNotification:
        return _text(403, "rejected: clientState or tenant does not match the subscription")
    except TimeoutError:
        log.warning("%s: storage did not answer within %g s; answered 503", webhook, DEADLINE_SECONDS)
        return _text(503, "storage unavailable; retry later")
    except AzureError as exc:
        log.warning("%s: storage unavailable (%s); answered 503", webhook, type(exc).__name__)
        return _text(503, "storage unavailable; retry later")
    log.info("%s: %s", webhook, summary)
    return _text(202)


@bp.route(route="notifications", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def notifications(req: func.HttpRequest) -> func.HttpResponse:
    """Verify, mark dirty, enqueue; 202 fast. Storage down -> 503 so Graph retries."""

    async def accept(runtime: Runtime, body: bytes) -> str:
        parsed = parse_notifications(body, max_bytes=runtime.settings.max_notification_bytes)
        result = await accept_notifications(
            parsed,
            store=await runtime.store(),
            jobs=await runtime.jobs(),
            tenant_id=runtime.settings.tenant_id,
            cache=runtime.subscription_cache,
            marks=runtime.dirty_marks,
        )
        return (
            f"accepted {result.notifications} notifications: {result.targets} targets, "
            f"{result.enqueued} jobs, {result.unknown_subscriptions} unknown subscriptions"
        )

    return await _answer(req, "notifications", accept)


@bp.route(route="lifecycle", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    """Verify and queue lifecycle work for the lifecycle worker (it does the Graph calls); 202 fast."""

    async def accept(runtime: Runtime, body: bytes) -> str:
        from shared.sync.lifecycle import enqueue_lifecycle_work  # the engine, not needed for notifications

        parsed = parse_lifecycle_notifications(body, max_bytes=runtime.settings.max_notification_bytes)
        work, unknown = await verify_lifecycle(
            parsed,
            store=await runtime.store(),
            tenant_id=runtime.settings.tenant_id,
            cache=runtime.subscription_cache,
        )
        queued = await enqueue_lifecycle_work(work, queue=await runtime.lifecycle_jobs())
        return f"lifecycle: {queued} queued, {unknown} unknown subscriptions"

    return await _answer(req, "lifecycle", accept)
