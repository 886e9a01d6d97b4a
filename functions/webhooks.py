"""Graph's two webhooks: change notifications and lifecycle notifications.

Both are anonymous HTTP functions (Graph cannot send a function key); authenticity comes from
the per-subscription clientState, checked in constant time in ``shared.sync.intake``. The
validation handshake (``?validationToken=``) is answered first: echo, text/plain, 200.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import azure.functions as func
from azure.core.exceptions import AzureError

from shared.outlook.notifications import NotificationRejected, validation_token
from shared.runtime import Runtime, get_runtime
from shared.sync.intake import (
    ForgedNotification,
    SubscriptionCache,
    accept_change_notifications,
    verify_lifecycle_notifications,
)
from shared.sync.lifecycle import handle_lifecycle

bp = func.Blueprint()
log = logging.getLogger(__name__)
_cache = SubscriptionCache()


def _validation_response(req: func.HttpRequest) -> func.HttpResponse | None:
    """Graph's subscription validation: echo the token as text/plain within 10 seconds."""
    token = validation_token(req.params)
    if token is None:
        return None
    return func.HttpResponse(token, status_code=200, mimetype="text/plain")


def _problem(status: int, detail: str) -> func.HttpResponse:
    return func.HttpResponse(detail, status_code=status, mimetype="text/plain")


async def _answer(req: func.HttpRequest, handle: Callable[[Runtime], Awaitable[str]]) -> func.HttpResponse:
    """The part both webhooks share: handshake first, then ``handle``; bad input 400, forged 403,
    storage down 503 (Graph retries), else 202. ``handle`` returns a log line of counts only."""
    try:
        handshake = _validation_response(req)
        if handshake is not None:
            return handshake
        summary = await handle(get_runtime())
    except NotificationRejected as exc:
        return _problem(400, f"rejected: {exc.reason}")
    except ForgedNotification:
        return _problem(403, "rejected: clientState or tenant does not match the subscription")
    except AzureError:
        log.exception("storage unavailable at %s; Graph will retry", req.url.rsplit("/", 1)[-1])
        return _problem(503, "storage unavailable; retry later")
    log.info(summary)
    return func.HttpResponse(status_code=202)


@bp.route(route="notifications", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def notifications(req: func.HttpRequest) -> func.HttpResponse:
    """Verify, mark dirty, enqueue; 202 fast. Storage down -> 503 so Graph retries."""

    async def accept(runtime: Runtime) -> str:
        result = await accept_change_notifications(
            req.get_body(),
            store=await runtime.store(),
            jobs=await runtime.jobs(),
            tenant_id=runtime.settings.tenant_id,
            max_bytes=runtime.settings.max_notification_bytes,
            cache=_cache,
        )
        return (
            f"accepted {result.notifications} notifications: {result.targets} targets, "
            f"{result.enqueued} jobs, {result.unknown_subscriptions} unknown subscriptions"
        )

    return await _answer(req, accept)


@bp.route(route="lifecycle", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    """Reauthorize, recreate or resync as Graph's lifecycle notification asks; 5xx makes Graph retry."""

    async def act(runtime: Runtime) -> str:
        store = await runtime.store()
        work, _unknown = await verify_lifecycle_notifications(
            req.get_body(),
            store=store,
            tenant_id=runtime.settings.tenant_id,
            max_bytes=runtime.settings.max_notification_bytes,
            cache=_cache,
        )
        outcome = await handle_lifecycle(
            work, store=store, jobs=await runtime.jobs(), subscriptions=await runtime.subscriptions()
        )
        for item in work:
            _cache.forget(item.subscription.subscription_id)
        return (
            f"lifecycle: {outcome.reauthorized} reauthorized, {outcome.recreated} recreated, "
            f"{outcome.resyncs_enqueued} resyncs"
        )

    return await _answer(req, act)
