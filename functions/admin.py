"""The admin HTTP API and status page: onboard, offboard, list, status, resync, enable, disable,
settings, audit, operations; ``admin/ui`` renders the status page.

Authentication: every route needs a function key (``x-functions-key`` or ``?code=``). In Azure, App
Service authentication (bicep/ ``authsettingsV2``) also signs the caller in with Entra ID and
rejects anonymous requests before they reach the app; the signed-in caller must hold the
``crmsync.Admin`` app role (403 otherwise) and is the audit's actor (shared.admin_api.http_actor).
Routes taking ``{mailbox}`` accept the mailbox id or its UPN, as the CLI does.

Thin: parse the request, call shared/, render JSON. Onboarding and releasing the brake (a full
resync) run on the admin queue (shared.admin_ops): the front end's 230 s limit would cut them.
Each handler imports what it calls when it is called: a cold start's first Graph notification
does not wait for the admin API, the status page or the sync engine (shared.runtime).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import azure.functions as func
from pydantic import ValidationError

from shared.runtime import get_runtime
from shared.store.errors import MailboxNotFound

bp = func.Blueprint()
log = logging.getLogger(__name__)
Handler = Callable[[func.HttpRequest, str], Awaitable[func.HttpResponse]]
ADMIN = func.AuthLevel.FUNCTION


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    from shared.admin_api import to_jsonable

    return func.HttpResponse(
        json.dumps(to_jsonable(body)), status_code=status, mimetype="application/json", headers=headers
    )


def _error(status: int, message: str) -> func.HttpResponse:
    return _json({"error": message}, status)


def _problems(exc: ValidationError, what: str) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or what}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)
    )


async def _guarded(req: func.HttpRequest, handler: Handler) -> func.HttpResponse:
    """The caller's actor (403 without the admin role), then the handler; an unknown mailbox is 404."""
    from shared.admin_api import AdminForbidden, http_actor

    try:
        actor = http_actor(
            req.headers.get("x-ms-client-principal"),
            req.headers.get("x-ms-client-principal-name"),
            req.headers.get("x-ms-client-principal-id"),
        )
    except AdminForbidden as exc:
        return _error(403, str(exc))
    try:
        return await handler(req, actor)
    except MailboxNotFound:
        return _error(404, "no such mailbox is registered (give its id or its UPN)")


async def _mailbox_id(req: func.HttpRequest) -> str:
    from shared.admin_api import resolve_mailbox

    store = await get_runtime().store()
    return (await resolve_mailbox(store, req.route_params["mailbox"])).mailbox_id


# -- mailboxes ------------------------------------------------------------------------------------


@bp.route(route="admin/mailboxes", methods=["GET"], auth_level=ADMIN)
async def list_mailboxes(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(_: func.HttpRequest, __: str) -> func.HttpResponse:
        from shared.admin_api import mailbox_summary

        store = await get_runtime().store()
        return _json([mailbox_summary(m) async for m in store.registry.list_mailboxes()])

    return await _guarded(req, handle)


@bp.route(route="admin/mailboxes", methods=["POST"], auth_level=ADMIN)
async def add_mailbox(req: func.HttpRequest) -> func.HttpResponse:
    """Enqueue the onboarding; 202 with the operation to poll (``Location``)."""

    async def handle(req: func.HttpRequest, actor: str) -> func.HttpResponse:
        from shared.admin_api import OnboardRequest

        try:
            request = OnboardRequest.model_validate_json(req.get_body())
        except ValidationError as exc:
            return _error(400, f"invalid request: {_problems(exc, 'body')}")
        operations = await get_runtime().admin_operations()
        operation = await operations.submit_onboarding(request, actor=actor)
        poll = f"/api/admin/operations/{operation.operation_id}"
        return _json({**operation.model_dump(mode="json"), "status_url": poll}, 202, {"Location": poll})

    return await _guarded(req, handle)


@bp.route(route="admin/operations/{operation}", methods=["GET"], auth_level=ADMIN)
async def get_operation(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest, _: str) -> func.HttpResponse:
        from shared.admin_ops import OperationNotFound

        operations = await get_runtime().admin_operations()
        try:
            return _json(await operations.get(req.route_params["operation"]))
        except OperationNotFound:
            return _error(404, "no such operation")

    return await _guarded(req, handle)


@bp.route(route="admin/mailboxes/{mailbox}", methods=["DELETE"], auth_level=ADMIN)
async def remove_mailbox(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest, actor: str) -> func.HttpResponse:
        mailbox_id = await _mailbox_id(req)
        onboarding = await get_runtime().onboarding()
        return _json(await onboarding.offboard(mailbox_id, actor=actor))

    return await _guarded(req, handle)


@bp.route(route="admin/mailboxes/{mailbox}/resync", methods=["POST"], auth_level=ADMIN)
async def resync(req: func.HttpRequest) -> func.HttpResponse:
    """Enqueue a full resync of every resource; 202 with the status URL to poll."""

    async def handle(req: func.HttpRequest, actor: str) -> func.HttpResponse:
        from shared.admin_api import enqueue_mailbox_resync

        runtime = get_runtime()
        mailbox_id = await _mailbox_id(req)
        enqueued = await enqueue_mailbox_resync(
            await runtime.store(), await runtime.jobs(), mailbox_id, actor=actor
        )
        poll = f"/api/admin/status?mailbox={mailbox_id}"
        return _json(
            {"mailbox_id": mailbox_id, "enqueued": enqueued, "status_url": poll}, 202, {"Location": poll}
        )

    return await _guarded(req, handle)


@bp.route(route="admin/mailboxes/{mailbox}/release-brake", methods=["POST"], auth_level=ADMIN)
async def release_brake(req: func.HttpRequest) -> func.HttpResponse:
    """Confirm the deletes the mass-delete brake refused (``{"confirm_deletes": N}``, exactly their
    number, else 409 naming it); the full resync that lets those deletes through is enqueued: 202 with
    the operation to poll (``Location``)."""

    async def handle(req: func.HttpRequest, actor: str) -> func.HttpResponse:
        from shared.admin_api import ReleaseBrakeRequest
        from shared.sync.brake import BrakeReleaseRefused

        try:
            request = ReleaseBrakeRequest.model_validate_json(req.get_body())
        except ValidationError as exc:
            return _error(400, f"invalid request: {_problems(exc, 'body')}")
        mailbox_id = await _mailbox_id(req)
        runtime = get_runtime()
        try:
            await (await runtime.maintenance()).check_brake_release(
                mailbox_id, confirm_deletes=request.confirm_deletes
            )
        except BrakeReleaseRefused as exc:
            return _error(409, str(exc))
        operations = await runtime.admin_operations()
        operation = await operations.submit_brake_release(mailbox_id, request.confirm_deletes, actor=actor)
        poll = f"/api/admin/operations/{operation.operation_id}"
        return _json({**operation.model_dump(mode="json"), "status_url": poll}, 202, {"Location": poll})

    return await _guarded(req, handle)


def _switch(enabled: bool) -> Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]:
    async def switch(req: func.HttpRequest) -> func.HttpResponse:
        async def handle(req: func.HttpRequest, actor: str) -> func.HttpResponse:
            from shared.admin_api import mailbox_summary, set_mailbox_enabled

            runtime = get_runtime()
            mailbox = await set_mailbox_enabled(
                await runtime.store(), await runtime.jobs(), await _mailbox_id(req), enabled, actor=actor
            )
            return _json(mailbox_summary(mailbox))

        return await _guarded(req, handle)

    return switch


enable = bp.route(route="admin/mailboxes/{mailbox}/enable", methods=["POST"], auth_level=ADMIN)(
    bp.function_name("enable_mailbox")(_switch(True))
)
disable = bp.route(route="admin/mailboxes/{mailbox}/disable", methods=["POST"], auth_level=ADMIN)(
    bp.function_name("disable_mailbox")(_switch(False))
)


@bp.route(route="admin/mailboxes/{mailbox}/settings", methods=["PUT"], auth_level=ADMIN)
async def mailbox_settings(req: func.HttpRequest) -> func.HttpResponse:
    """Replace the mailbox's settings (the JSON ``mailbox add --settings`` takes)."""

    async def handle(req: func.HttpRequest, actor: str) -> func.HttpResponse:
        from shared.admin_api import SettingsChangeRefused, change_mailbox_settings, mailbox_summary
        from shared.domain.mailbox_settings import MailboxSettings

        try:
            settings = MailboxSettings.model_validate_json(req.get_body())
        except ValidationError as exc:
            return _error(400, f"invalid mailbox settings: {_problems(exc, 'settings')}")
        runtime = get_runtime()
        try:
            mailbox = await change_mailbox_settings(
                await runtime.store(), await runtime.jobs(), await _mailbox_id(req), settings, actor=actor
            )
        except SettingsChangeRefused as exc:
            return _error(409, str(exc))
        return _json({**mailbox_summary(mailbox), "settings": mailbox.settings})

    return await _guarded(req, handle)


@bp.route(route="admin/mailboxes/{mailbox}/audit", methods=["GET"], auth_level=ADMIN)
async def audit(req: func.HttpRequest) -> func.HttpResponse:
    """The audit trail, newest first; ``?since=ISO`` and ``?item=<Outlook or CRM id>`` narrow it."""

    async def handle(req: func.HttpRequest, _: str) -> func.HttpResponse:
        from shared.admin_api import audited_mailbox_id, parse_since, read_audit

        try:
            since = parse_since(req.params["since"]) if req.params.get("since") else None
        except ValueError:
            return _error(400, "since: give an ISO 8601 date or date-time")
        store = await get_runtime().store()
        mailbox_id = await audited_mailbox_id(store, req.route_params["mailbox"])
        records = await read_audit(store, mailbox_id, since=since, item=req.params.get("item"))
        return _json(records)

    return await _guarded(req, handle)


@bp.route(route="admin/status", methods=["GET"], auth_level=ADMIN)
async def status(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest, _: str) -> func.HttpResponse:
        from shared.admin_api import resolve_mailbox, to_jsonable
        from shared.sync.status import mailbox_statuses

        runtime = get_runtime()
        store = await runtime.store()
        wanted = req.params.get("mailbox")
        mailbox_id = None if wanted is None else (await resolve_mailbox(store, wanted)).mailbox_id
        reports = await mailbox_statuses(store, mailbox_id, max_attempts=runtime.settings.parked_max_attempts)
        return _json(
            [{**to_jsonable(r), "backlog": r.backlog, "last_sync_at": r.last_sync_at} for r in reports]
        )

    return await _guarded(req, handle)


@bp.route(route="admin/ui", methods=["GET"], auth_level=ADMIN)
async def status_page(req: func.HttpRequest) -> func.HttpResponse:
    """The status page: server-rendered HTML, inline CSS and JS under a nonce CSP, no remote asset."""

    async def handle(_: func.HttpRequest, actor: str) -> func.HttpResponse:
        from shared.admin_ui import CSP, render_status_page, status_page_data

        data = await status_page_data(await get_runtime().store())
        page, nonce = render_status_page(data, actor=actor, release_brake=True)
        return func.HttpResponse(
            page,
            status_code=200,
            mimetype="text/html",
            charset="utf-8",
            headers={
                "Content-Security-Policy": CSP.format(nonce=nonce),
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
            },
        )

    return await _guarded(req, handle)


# -- the admin queue ------------------------------------------------------------------------------


@bp.queue_trigger(arg_name="msg", queue_name="%CRMSYNC_JOB_QUEUE%-admin", connection="AzureWebJobsStorage")
async def admin_worker(msg: func.QueueMessage) -> None:
    """Run an enqueued onboarding or brake release; a transient failure raises, so the host retries
    the message."""
    from shared.admin_ops import OperationNotFound
    from shared.sync.dispatch import MAX_DEQUEUE_COUNT

    runtime = get_runtime()
    operations = await runtime.admin_operations()
    try:
        await operations.run(
            msg.get_body(),
            await runtime.onboarding(),
            await runtime.maintenance(),
            last_attempt=(msg.dequeue_count or 1) >= MAX_DEQUEUE_COUNT,
        )
    except (ValidationError, OperationNotFound):
        log.error("dropped an admin queue message that is not a known admin job")
