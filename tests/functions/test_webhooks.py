"""The notification webhook, called as the host calls it, on real Azurite storage.

Behaviour follows "Receive change notifications through webhooks" (learn.microsoft.com/graph/
change-notifications-delivery-webhooks): validation echo; 202 within 3 s; clientState checked.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

import azure.functions as func
import pytest
from azure.storage.queue.aio import QueueClient

from shared.runtime import Runtime
from shared.store.records import SubscriptionRecord, hash_client_state
from tests.fixtures.app import registered_function, sandbox_settings, use_settings

TENANT = "00000000-0000-4000-8000-000000000001"


def handler(name: str) -> Any:
    return registered_function(name)


def post(body: bytes, params: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest(
        method="POST", url="http://localhost/api/notifications", params=params or {}, body=body
    )


def payload(subscription_id: str, client_state: str, *, tenant: str = TENANT, count: int = 1) -> bytes:
    expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    return json.dumps(
        {
            "value": [
                {
                    "subscriptionId": subscription_id,
                    "subscriptionExpirationDateTime": expiry,
                    "changeType": "updated",
                    "resource": "Users/u1/Contacts/AAMk=",
                    "resourceData": {"@odata.type": "#Microsoft.Graph.Contact", "id": "AAMk="},
                    "clientState": client_state,
                    "tenantId": tenant,
                }
                for _ in range(count)
            ]
        }
    ).encode()


async def subscribe(runtime: Runtime, mailbox: str, resource: str) -> tuple[str, str]:
    subscription_id, secret = str(uuid.uuid4()), "s3cret-" + uuid.uuid4().hex
    store = await runtime.store()
    await store.subscriptions.put(
        SubscriptionRecord(
            subscription_id=subscription_id,
            mailbox_id=mailbox,
            resource=resource,
            client_state_hash=hash_client_state(secret),
            expiration=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
        )
    )
    return subscription_id, secret


async def queued_jobs(runtime: Runtime) -> list[dict[str, str]]:
    await runtime.jobs()  # creates the queue if nothing was enqueued yet
    settings = runtime.settings
    assert settings.storage_connection_string
    from azure.storage.queue import TextBase64DecodePolicy

    async with QueueClient.from_connection_string(
        settings.storage_connection_string, settings.job_queue, message_decode_policy=TextBase64DecodePolicy()
    ) as queue:
        return [json.loads(m.content) for m in await queue.peek_messages(max_messages=32)]


async def test_validation_handshake_echoes_the_token_as_text() -> None:
    response = await handler("notifications")(post(b"", {"validationToken": "Validation: Token 123 +/="}))
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_body() == b"Validation: Token 123 +/="


async def test_a_burst_of_notifications_becomes_one_job(app_runtime: Runtime) -> None:
    subscription_id, secret = await subscribe(app_runtime, "mbx-1", "users/mbx-1/contacts")
    notify = handler("notifications")
    started = time.perf_counter()
    first = await notify(post(payload(subscription_id, secret, count=3)))
    elapsed = time.perf_counter() - started
    second = await notify(post(payload(subscription_id, secret)))
    assert (first.status_code, second.status_code) == (202, 202)
    assert elapsed < 3.0
    jobs = await queued_jobs(app_runtime)
    assert [(j["mailbox_id"], j["resource"], j["reason"]) for j in jobs] == [
        ("mbx-1", "users/mbx-1/contacts", "notification")
    ]
    state = await (await app_runtime.store()).sync_state.get_state("mbx-1", "users/mbx-1/contacts")
    assert state.dirty


@pytest.mark.parametrize(
    ("secret_of", "tenant"), [("forged", TENANT), ("genuine", "00000000-0000-4000-8000-0000000000ff")]
)
async def test_forged_client_state_or_tenant_is_refused_and_changes_nothing(
    app_runtime: Runtime, secret_of: str, tenant: str
) -> None:
    subscription_id, secret = await subscribe(app_runtime, "mbx-2", "users/mbx-2/contacts")
    presented = secret if secret_of == "genuine" else "guessed-" + secret
    response = await handler("notifications")(post(payload(subscription_id, presented, tenant=tenant)))
    assert response.status_code == 403
    assert secret not in response.get_body().decode()
    assert await queued_jobs(app_runtime) == []
    state = await (await app_runtime.store()).sync_state.get_state("mbx-2", "users/mbx-2/contacts")
    assert not state.dirty


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"value": []}', "not a notification collection"),
        (b'{"value": [{"changeType": "updated"}]}', "invalid notification"),
    ],
)
async def test_malformed_payloads_get_a_clear_400(app_runtime: Runtime, body: bytes, reason: str) -> None:
    response = await handler("notifications")(post(body))
    assert response.status_code == 400
    assert reason in response.get_body().decode()
    assert await queued_jobs(app_runtime) == []


async def test_a_body_over_the_cap_gets_413_unparsed(app_runtime: Runtime) -> None:
    response = await handler("notifications")(post(b"x" * 1_000_001))
    assert response.status_code == 413
    assert "exceeds" in response.get_body().decode()
    assert await queued_jobs(app_runtime) == []


async def test_unknown_subscriptions_are_acknowledged_and_ignored(app_runtime: Runtime) -> None:
    response = await handler("notifications")(post(payload(str(uuid.uuid4()), "whatever")))
    assert response.status_code == 202
    assert await queued_jobs(app_runtime) == []


async def test_storage_down_answers_503_so_graph_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    from simulators.ports import free_port

    dead = free_port()
    storage = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"TableEndpoint=http://127.0.0.1:{dead}/devstoreaccount1;QueueEndpoint=http://127.0.0.1:{dead}/devstoreaccount1;"
    )
    url = "http://127.0.0.1:9"
    runtime = await use_settings(
        monkeypatch, sandbox_settings(storage, graph_url=url + "/v1.0", dataverse_url=url, functions_url=url)
    )
    try:
        response = await handler("notifications")(post(payload(str(uuid.uuid4()), "s")))
        assert response.status_code == 503
    finally:
        await runtime.close()
