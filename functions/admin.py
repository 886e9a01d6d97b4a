"""The admin HTTP API (function-key auth): onboard, offboard, list, status, resync.

Thin: parse the request, call shared/, render the typed report as JSON. Long initial syncs of big
mailboxes are better started with ``crmsync mailbox add`` (progress bar, no HTTP time limit).
"""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
from pydantic import ValidationError

from shared.admin_api import OnboardRequest, enqueue_mailbox_resync, to_jsonable
from shared.runtime import get_runtime
from shared.store.errors import MailboxNotFound
from shared.sync.onboarding import OnboardingRefused
from shared.sync.status import mailbox_statuses

bp = func.Blueprint()


def _json(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(to_jsonable(body)), status_code=status, mimetype="application/json")


def _error(status: int, message: str) -> func.HttpResponse:
    return _json({"error": message}, status)


@bp.route(route="admin/mailboxes", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def list_mailboxes(req: func.HttpRequest) -> func.HttpResponse:
    store = await get_runtime().store()
    mailboxes = [mailbox async for mailbox in store.registry.list_mailboxes()]
    return _json(
        [
            {
                "mailbox_id": m.mailbox_id,
                "upn": m.upn,
                "crm_user_id": m.crm_user_id,
                "enabled": m.enabled,
                "state": m.state,
            }
            for m in mailboxes
        ]
    )


@bp.route(route="admin/mailboxes", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def add_mailbox(req: func.HttpRequest) -> func.HttpResponse:
    try:
        request = OnboardRequest.model_validate_json(req.get_body())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        return _error(400, f"invalid request: {problems}")
    onboarding = await get_runtime().onboarding()
    try:
        report = await onboarding.onboard(request.mailbox, str(request.crm_user), settings=request.settings)
    except OnboardingRefused as exc:
        return _error(409, str(exc))
    return _json(report, 201)


@bp.route(route="admin/mailboxes/{mailbox}", methods=["DELETE"], auth_level=func.AuthLevel.FUNCTION)
async def remove_mailbox(req: func.HttpRequest) -> func.HttpResponse:
    onboarding = await get_runtime().onboarding()
    return _json(await onboarding.offboard(req.route_params["mailbox"]))


@bp.route(route="admin/mailboxes/{mailbox}/resync", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def resync(req: func.HttpRequest) -> func.HttpResponse:
    runtime = get_runtime()
    try:
        enqueued = await enqueue_mailbox_resync(
            await runtime.store(), await runtime.jobs(), req.route_params["mailbox"]
        )
    except MailboxNotFound:
        return _error(404, "no such mailbox is registered")
    return _json({"enqueued": enqueued}, 202)


@bp.route(route="admin/status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def status(req: func.HttpRequest) -> func.HttpResponse:
    store = await get_runtime().store()
    try:
        reports = await mailbox_statuses(store, req.params.get("mailbox"))
    except MailboxNotFound:
        return _error(404, "no such mailbox is registered")
    return _json([{**to_jsonable(r), "backlog": r.backlog, "last_sync_at": r.last_sync_at} for r in reports])
