"""The admin HTTP API's registered functions on real Azurite (and the Graph simulator for onboarding).

Routes taking {mailbox} accept the id or the UPN; a signed-in caller (App Service authentication's
X-MS-CLIENT-PRINCIPAL) needs the crmsync.Admin role and is the audit's actor; onboarding and
resync are enqueued (202 + where to poll), never run inside the request.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient

from shared.admin_ui import render_status_page, status_page_data
from shared.admin_ui.data import BRAKE_REASON
from shared.domain.model import ItemKind
from shared.runtime import Runtime
from shared.store.records import AuditAction, AuditRecord, Mailbox, SubscriptionRecord
from shared.sync.notes import SERIES_NOT_EXPRESSIBLE, leave_note
from simulators.azurite import Azurite
from tests.fixtures.app import registered_function, sandbox_settings, use_settings
from tests.fixtures.graph_sim import GraphSim

ADMIN_OID = "6f1f7c3e-2a4b-4d6e-8f00-1234567890ab"
UPN = "Alice.Admin-Test@contoso.example"


def principal(*roles: str, oid: str = ADMIN_OID) -> dict[str, str]:
    """The headers App Service authentication adds for a signed-in Entra user."""
    claims = [
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
        {"typ": "name", "val": "Admin Person"},
        *({"typ": "roles", "val": role} for role in roles),
    ]
    document = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return {
        "X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(document).encode()).decode(),
        "X-MS-CLIENT-PRINCIPAL-NAME": "admin@contoso.example",
    }


ADMIN = principal("crmsync.Admin")


async def call(
    name: str,
    method: str,
    route: str,
    *,
    mailbox: str | None = None,
    body: Any = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> func.HttpResponse:
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    request = func.HttpRequest(
        method=method,
        url=f"/api/{route}",
        body=raw,
        params=params or {},
        route_params={"mailbox": mailbox} if mailbox is not None else {},
        headers=headers or {},
    )
    response: func.HttpResponse = await registered_function(name)(request)
    return response


def answer(response: func.HttpResponse) -> Any:
    return json.loads(response.get_body())


async def register(runtime: Runtime, *, upn: str = UPN) -> Mailbox:
    store = await runtime.store()
    mailbox_id = str(uuid.uuid4())
    mailbox = await store.registry.register(
        mailbox_id=mailbox_id, upn=upn, crm_user_id=str(uuid.uuid4()), crm_caller_object_id=mailbox_id
    )
    await store.subscriptions.put(
        SubscriptionRecord(
            subscription_id=str(uuid.uuid4()),
            mailbox_id=mailbox_id,
            resource=f"users/{mailbox_id}/contacts",
            client_state_hash="0" * 64,
            expiration=dt.datetime.now(dt.UTC) + dt.timedelta(days=2),
        )
    )
    return mailbox


async def queued(runtime: Runtime, queue_name: str) -> list[dict[str, Any]]:
    settings = runtime.settings
    assert settings.storage_connection_string
    async with QueueClient.from_connection_string(
        settings.storage_connection_string, queue_name, message_decode_policy=TextBase64DecodePolicy()
    ) as queue:
        return [json.loads(m.content) for m in await queue.peek_messages(max_messages=32)]


async def audit_actions(runtime: Runtime, mailbox_id: str) -> list[tuple[str, str]]:
    records = await (await runtime.store()).audit.list_recent(mailbox_id)
    return [(r.action.value, r.actor) for r in records]


async def test_disable_and_enable_by_upn_record_the_signed_in_admin(app_runtime: Runtime) -> None:
    mailbox = await register(app_runtime)
    await app_runtime.jobs()

    response = await call(
        "disable_mailbox", "POST", "admin/mailboxes/x/disable", mailbox=UPN.lower(), headers=ADMIN
    )

    assert response.status_code == 200, response.get_body()
    assert answer(response)["enabled"] is False
    store = await app_runtime.store()
    assert (await store.registry.get_mailbox(mailbox.mailbox_id)).enabled is False
    assert await audit_actions(app_runtime, mailbox.mailbox_id) == [("disabled", f"entra:{ADMIN_OID}")]
    assert await queued(app_runtime, app_runtime.settings.job_queue) == []

    response = await call("enable_mailbox", "POST", "admin/mailboxes/x/enable", mailbox=UPN, headers=ADMIN)

    assert response.status_code == 200
    assert (await store.registry.get_mailbox(mailbox.mailbox_id)).enabled is True
    assert (await audit_actions(app_runtime, mailbox.mailbox_id))[0] == ("enabled", f"entra:{ADMIN_OID}")
    jobs = await queued(app_runtime, app_runtime.settings.job_queue)
    assert [(j["mailbox_id"], j["reason"]) for j in jobs] == [(mailbox.mailbox_id, "manual")]


@pytest.mark.parametrize(
    "headers",
    [
        principal(),  # signed in, no role
        principal("crmsync.Reader"),
        {"X-MS-CLIENT-PRINCIPAL": "not base64 json {"},
        {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b'{"claims": 7}').decode()},
    ],
)
async def test_a_caller_without_the_admin_role_gets_403_and_changes_nothing(
    app_runtime: Runtime, headers: dict[str, str]
) -> None:
    mailbox = await register(app_runtime)

    for name, route in (("disable_mailbox", "disable"), ("resync", "resync")):
        response = await call(
            name, "POST", f"admin/mailboxes/x/{route}", mailbox=mailbox.mailbox_id, headers=headers
        )
        assert response.status_code == 403
    page = await call("status_page", "GET", "admin/ui", headers=headers)

    assert page.status_code == 403
    assert (await (await app_runtime.store()).registry.get_mailbox(mailbox.mailbox_id)).enabled
    assert await audit_actions(app_runtime, mailbox.mailbox_id) == []


async def test_an_unknown_mailbox_is_404_by_id_or_upn(app_runtime: Runtime) -> None:
    await register(app_runtime)
    for mailbox in (str(uuid.uuid4()), "nobody@contoso.example"):
        response = await call("resync", "POST", "admin/mailboxes/x/resync", mailbox=mailbox)
        assert response.status_code == 404
        assert "UPN" in answer(response)["error"]


async def test_resync_is_enqueued_with_where_to_poll_even_for_a_dirty_resource(app_runtime: Runtime) -> None:
    mailbox = await register(app_runtime)
    store = await app_runtime.store()
    resource = f"users/{mailbox.mailbox_id}/contacts"
    await store.sync_state.save_delta_link(mailbox.mailbox_id, resource, "https://graph.example/delta?t=1")
    await store.sync_state.mark_dirty(mailbox.mailbox_id, resource)  # a dirty flag whose job was lost
    await app_runtime.jobs()

    response = await call("resync", "POST", "admin/mailboxes/x/resync", mailbox=UPN)

    assert response.status_code == 202
    body = answer(response)
    assert body["enqueued"] == 1
    assert (
        response.headers["Location"]
        == body["status_url"]
        == f"/api/admin/status?mailbox={mailbox.mailbox_id}"
    )
    jobs = await queued(app_runtime, app_runtime.settings.job_queue)
    assert [(j["resource"], j["reason"]) for j in jobs] == [(resource, "resync")]
    assert (await store.sync_state.get_state(mailbox.mailbox_id, resource)).delta_link is None
    assert await audit_actions(app_runtime, mailbox.mailbox_id) == [("resync", "function-key")]
    status = await call("status", "GET", "admin/status", params={"mailbox": UPN})
    assert [s["mailbox_id"] for s in answer(status)] == [mailbox.mailbox_id]


async def test_settings_are_replaced_validated_and_audited(app_runtime: Runtime) -> None:
    mailbox = await register(app_runtime)
    store = await app_runtime.store()
    await app_runtime.jobs()

    bad = await call(
        "mailbox_settings", "PUT", "admin/mailboxes/x/settings", mailbox=UPN, body={"tracking": 7}
    )
    kinds = await call(
        "mailbox_settings", "PUT", "admin/mailboxes/x/settings", mailbox=UPN, body={"item_kinds": ["contact"]}
    )

    assert bad.status_code == 400
    assert "tracking" in answer(bad)["error"]
    assert kinds.status_code == 409
    assert "item_kinds" in answer(kinds)["error"]
    assert (await store.registry.get_mailbox(mailbox.mailbox_id)).settings == mailbox.settings
    assert await audit_actions(app_runtime, mailbox.mailbox_id) == []

    response = await call(
        "mailbox_settings",
        "PUT",
        "admin/mailboxes/x/settings",
        mailbox=mailbox.mailbox_id,
        body={"conflict_tie_break": "outlook"},
        headers=ADMIN,
    )

    assert response.status_code == 200, response.get_body()
    saved = (await store.registry.get_mailbox(mailbox.mailbox_id)).settings
    assert saved.conflict_tie_break.value == "outlook"
    assert await audit_actions(app_runtime, mailbox.mailbox_id) == [
        ("settings_changed", f"entra:{ADMIN_OID}")
    ]


async def test_the_audit_route_filters_by_hashed_item_and_time_and_shows_no_id(app_runtime: Runtime) -> None:
    mailbox = await register(app_runtime)
    store = await app_runtime.store()
    outlook_id, crm_id = "AAMkAD/abc+def==", str(uuid.uuid4())
    old = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for kind_id, at in ((outlook_id, old), ("AAMkAD/other==", old + dt.timedelta(days=30))):
        await store.audit.append(
            AuditRecord.for_item(
                mailbox_id=mailbox.mailbox_id,
                actor="crmsync",
                action=AuditAction.CREATED_IN_CRM,
                kind=ItemKind.CONTACT,
                outlook_id=kind_id,
                crm_id=crm_id if kind_id == outlook_id else None,
                at=at,
            )
        )

    by_item = await call("audit", "GET", "admin/mailboxes/x/audit", mailbox=UPN, params={"item": outlook_id})
    by_crm = await call("audit", "GET", "admin/mailboxes/x/audit", mailbox=UPN, params={"item": crm_id})
    since = await call("audit", "GET", "admin/mailboxes/x/audit", mailbox=UPN, params={"since": "2026-01-15"})
    bad = await call("audit", "GET", "admin/mailboxes/x/audit", mailbox=UPN, params={"since": "yesterday"})

    assert [r["at"][:10] for r in answer(by_item)] == ["2026-01-01"]
    assert [r["at"][:10] for r in answer(by_crm)] == ["2026-01-01"]
    assert [r["at"][:10] for r in answer(since)] == ["2026-01-31"]
    assert bad.status_code == 400
    assert outlook_id.encode() not in by_item.get_body()
    assert crm_id.encode() not in by_crm.get_body()


async def test_onboarding_is_enqueued_and_answers_202_with_the_operation(app_runtime: Runtime) -> None:
    invalid = await call("add_mailbox", "POST", "admin/mailboxes", body={"mailbox": "x@contoso.example"})
    assert invalid.status_code == 400
    assert "crmUser" in answer(invalid)["error"]

    response = await call(
        "add_mailbox",
        "POST",
        "admin/mailboxes",
        body={"mailbox": "new@contoso.example", "crmUser": str(uuid.uuid4())},
        headers=ADMIN,
    )

    assert response.status_code == 202
    body = answer(response)
    assert body["status"] == "queued"
    assert (
        response.headers["Location"] == body["status_url"] == f"/api/admin/operations/{body['operation_id']}"
    )
    (job,) = await queued(app_runtime, f"{app_runtime.settings.job_queue}-admin")
    assert (job["operation_id"], job["mailbox"], job["actor"]) == (
        body["operation_id"],
        "new@contoso.example",
        f"entra:{ADMIN_OID}",
    )
    assert (await _operation(body["operation_id"]))["status"] == "queued"


@pytest.fixture
async def graph_runtime(
    monkeypatch: pytest.MonkeyPatch, azurite: Azurite, graph_sim: GraphSim
) -> AsyncIterator[Runtime]:
    settings = sandbox_settings(
        azurite.connection_string,
        graph_url=graph_sim.base_url,
        dataverse_url="http://127.0.0.1:9",
        functions_url="http://127.0.0.1:9",
    )
    runtime = await use_settings(monkeypatch, settings)
    yield runtime
    await runtime.close()


async def _operation(operation_id: str) -> dict[str, Any]:
    request = func.HttpRequest(
        method="GET",
        url=f"/api/admin/operations/{operation_id}",
        body=b"",
        route_params={"operation": operation_id},
    )
    response = await registered_function("get_operation")(request)
    assert response.status_code == 200, response.get_body()
    result: dict[str, Any] = json.loads(response.get_body())
    return result


async def test_the_admin_worker_runs_the_onboarding_and_records_the_refusal(graph_runtime: Runtime) -> None:
    response = await call(
        "add_mailbox",
        "POST",
        "admin/mailboxes",
        body={"mailbox": f"ghost-{uuid.uuid4().hex[:6]}@contoso.example", "crmUser": str(uuid.uuid4())},
        headers=ADMIN,
    )
    operation_id = answer(response)["operation_id"]
    assert (await _operation(operation_id))["status"] == "queued"
    settings = graph_runtime.settings
    assert settings.storage_connection_string
    async with QueueClient.from_connection_string(
        settings.storage_connection_string,
        f"{settings.job_queue}-admin",
        message_decode_policy=TextBase64DecodePolicy(),
    ) as queue:
        (message,) = [m async for m in queue.receive_messages()]

    await registered_function("admin_worker")(
        QueueMessage(id=message.id, body=message.content.encode(), dequeue_count=1)  # type: ignore[no-untyped-call]
    )

    operation = await _operation(operation_id)
    assert operation["status"] == "failed"
    assert operation["actor"] == f"entra:{ADMIN_OID}"
    assert "no Exchange Online mailbox" in operation["message"]
    assert [m async for m in (await graph_runtime.store()).registry.list_mailboxes()] == []
    unknown = await registered_function("get_operation")(
        func.HttpRequest(method="GET", url="/x", body=b"", route_params={"operation": "f" * 32})
    )
    assert unknown.status_code == 404


async def test_the_status_page_loads_nothing_from_elsewhere_and_escapes(app_runtime: Runtime) -> None:
    await register(app_runtime, upn="<script>alert(1)</script>@contoso.example")
    mailbox = await register(app_runtime, upn="bob@contoso.example")
    await (await app_runtime.store()).registry.set_enabled(mailbox.mailbox_id, False)

    response = await call("status_page", "GET", "admin/ui", headers=ADMIN)

    assert response.status_code == 200
    page = response.get_body().decode()
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    nonce = csp.split("'nonce-")[1].split("'")[0]
    assert page.count(f'nonce="{nonce}"') == 2  # the one <style> and the one <script>
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@contoso.example" in page
    for remote in ("http://", "https://", " src=", "<link", "@import", "url("):
        assert remote not in page
    assert 'data-count="disabled">1<' in page
    assert f"entra:{ADMIN_OID}" in page


async def test_an_onboarding_that_keeps_failing_is_marked_failed_on_its_last_attempt(
    app_runtime: Runtime,
) -> None:
    """Graph is unreachable here: each attempt raises (the host retries); the last one marks it failed."""
    response = await call(
        "add_mailbox",
        "POST",
        "admin/mailboxes",
        body={"mailbox": "later@contoso.example", "crmUser": str(uuid.uuid4())},
    )
    operation_id = answer(response)["operation_id"]
    (job,) = await queued(app_runtime, f"{app_runtime.settings.job_queue}-admin")
    worker = registered_function("admin_worker")
    body = json.dumps(job).encode()

    with pytest.raises(Exception) as first:  # noqa: PT011 - whatever the transport raises
        await worker(QueueMessage(id="1", body=body, dequeue_count=1))  # type: ignore[no-untyped-call]
    after_first = await _operation(operation_id)
    with pytest.raises(type(first.value)):
        await worker(QueueMessage(id="1", body=body, dequeue_count=5))  # type: ignore[no-untyped-call]

    assert after_first["status"] == "running"
    assert after_first["message"] == f"retrying after {type(first.value).__name__}"
    final = await _operation(operation_id)
    assert final["status"] == "failed"
    assert final["message"].startswith("gave up after")
    assert [m async for m in (await app_runtime.store()).registry.list_mailboxes()] == []


async def test_the_release_brake_button_shows_only_for_a_braked_mailbox_when_the_route_exists(
    app_runtime: Runtime,
) -> None:
    braked = await register(app_runtime, upn="braked@contoso.example")
    await register(app_runtime, upn="calm@contoso.example")
    store = await app_runtime.store()
    await store.sync_state.record_error(
        braked.mailbox_id, f"users/{braked.mailbox_id}/contacts", BRAKE_REASON
    )
    data = await status_page_data(store)

    with_route, _ = render_status_page(data, actor="function-key", release_brake=True)
    without_route, _ = render_status_page(data, actor="function-key", release_brake=False)

    assert with_route.count('data-action="release-brake"') == 1
    assert f'data-url="/api/admin/mailboxes/{braked.mailbox_id}/release-brake"' in with_route
    assert 'data-action="release-brake"' not in without_route
    assert "mass_delete_refused" in without_route  # the brake shows as the resource's last error


async def test_the_status_page_shows_standing_notes_and_why_crm_to_outlook_stopped(
    app_runtime: Runtime,
) -> None:
    noted = await register(app_runtime, upn="noted@contoso.example")
    await register(app_runtime, upn="plain@contoso.example")
    store = await app_runtime.store()
    await leave_note(store.sync_state, noted.mailbox_id, SERIES_NOT_EXPRESSIBLE)
    await store.sync_state.record_error(noted.mailbox_id, "crm:task", "crm_no_sync_to_outlook_privilege")

    page, _ = render_status_page(await status_page_data(store), actor="function-key")

    assert page.count("<li data-note=") == 2
    assert page.count('<ul class="notes">') == 1  # the other mailbox has none
    assert 'data-note="series_pattern_not_expressible"' in page
    assert "single occurrences" in page
    assert "CRM -&gt; Outlook stopped for task: crm_no_sync_to_outlook_privilege" in page
