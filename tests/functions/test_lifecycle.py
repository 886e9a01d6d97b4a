"""The lifecycle webhook and its queue worker against the Graph simulator and Azurite.

Follows "Reduce missing subscriptions and change notifications" (learn.microsoft.com/graph/
change-notifications-lifecycle-events): reauthorizationRequired -> POST /subscriptions/{id}/
reauthorize; subscriptionRemoved -> create the subscription again and catch up with a delta;
missed -> catch up with a delta. The webhook verifies and queues; the worker calls Graph, once per
subscription however often a notification is delivered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import azure.functions as func
import pytest
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient

from shared.outlook.notifications import LifecycleEvent
from shared.outlook.subscriptions import ResourceKind
from shared.runtime import Runtime
from shared.store.errors import SubscriptionNotFound
from shared.store.records import SubscriptionRecord, hash_client_state
from shared.sync.lifecycle import LifecycleJob, lifecycle_queue_name
from simulators.azurite import Azurite
from simulators.graph.sink import NotificationSink
from tests.fixtures.app import registered_function, sandbox_settings, use_settings
from tests.fixtures.graph_sim import GraphSim


@pytest.fixture
async def runtime(
    monkeypatch: pytest.MonkeyPatch, azurite: Azurite, graph_sim: GraphSim, graph_sink: NotificationSink
) -> AsyncIterator[Runtime]:
    settings = sandbox_settings(
        azurite.connection_string,
        graph_url=graph_sim.base_url,
        dataverse_url="http://127.0.0.1:9",
        functions_url="http://127.0.0.1:9",
    )
    settings["CRMSYNC_TENANT_ID"] = graph_sim.config()["tenant_id"]
    settings["CRMSYNC_NOTIFICATION_URL"] = graph_sink.url
    settings["CRMSYNC_LIFECYCLE_URL"] = graph_sink.lifecycle_url
    runtime = await use_settings(monkeypatch, settings)
    yield runtime
    await runtime.close()


async def _subscribe(runtime: Runtime, mailbox: str) -> tuple[SubscriptionRecord, str]:
    created = await (await runtime.subscriptions()).create(mailbox, ResourceKind.CONTACTS)
    record = SubscriptionRecord(
        subscription_id=created.id,
        mailbox_id=mailbox,
        resource=created.resource,
        client_state_hash=hash_client_state(created.client_state),
        expiration=created.expires,
    )
    await (await runtime.store()).subscriptions.put(record)
    return record, created.client_state


def _forged(record: SubscriptionRecord, client_state: str, event: str, tenant: str) -> func.HttpRequest:
    body = {
        "value": [
            {
                "subscriptionId": record.subscription_id,
                "subscriptionExpirationDateTime": (
                    dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
                ).isoformat(),
                "tenantId": tenant,
                "clientState": client_state,
                "lifecycleEvent": event,
            }
        ]
    }
    return func.HttpRequest(method="POST", url="/api/lifecycle", body=json.dumps(body).encode())


def _from_graph(
    graph_sim: GraphSim, sink: NotificationSink, record: SubscriptionRecord, event: str
) -> func.HttpRequest:
    """Have the simulator send a real lifecycle notification and relay what it posted."""
    graph_sim.lifecycle(record.subscription_id, event)
    [notification] = sink.wait_for(1, path="/lifecycle")
    return func.HttpRequest(
        method="POST", url="/api/lifecycle", body=json.dumps({"value": [notification]}).encode()
    )


async def _jobs(runtime: Runtime) -> list[dict[str, Any]]:
    await runtime.jobs()  # creates the queue if nothing was enqueued yet
    return await _peek(runtime, runtime.settings.job_queue)


async def _peek(runtime: Runtime, queue_name: str) -> list[dict[str, Any]]:
    settings = runtime.settings
    assert settings.storage_connection_string
    async with QueueClient.from_connection_string(
        settings.storage_connection_string, queue_name, message_decode_policy=TextBase64DecodePolicy()
    ) as queue:
        return [json.loads(m.content) for m in await queue.peek_messages(max_messages=32)]


async def _take_lifecycle_messages(runtime: Runtime) -> list[func.QueueMessage]:
    """Receive and delete what the webhook queued, as the host hands it to the lifecycle worker."""
    await runtime.lifecycle_jobs()  # creates the queue if nothing was queued yet
    settings = runtime.settings
    assert settings.storage_connection_string
    async with QueueClient.from_connection_string(
        settings.storage_connection_string,
        lifecycle_queue_name(settings.job_queue),
        message_decode_policy=TextBase64DecodePolicy(),
    ) as queue:
        taken = []
        async for message in queue.receive_messages(max_messages=32):
            taken.append(func.QueueMessage(id=message.id, body=message.content.encode()))
            await queue.delete_message(message)
        return taken


async def _work_off(runtime: Runtime) -> int:
    """Run the lifecycle worker on every queued message, all at once (as several instances would)."""
    messages = await _take_lifecycle_messages(runtime)
    await asyncio.gather(*(registered_function("lifecycle_worker")(m) for m in messages))
    return len(messages)


def _live(graph_sim: GraphSim, user: str) -> list[str]:
    """The ids of the subscriptions Graph holds for ``user``'s mailbox."""
    return sorted(s["id"] for s in graph_sim.subscriptions(user))


async def test_reauthorization_required_is_queued_then_reauthorized_by_the_worker(
    runtime: Runtime, graph_sim: GraphSim, graph_sink: NotificationSink, graph_user: str
) -> None:
    record, _ = await _subscribe(runtime, graph_user)
    graph_sim.clear_requests(graph_user)
    request = _from_graph(graph_sim, graph_sink, record, "reauthorizationRequired")
    response = await registered_function("lifecycle")(request)
    assert response.status_code == 202
    reauthorize = ("POST", f"/subscriptions/{record.subscription_id}/reauthorize")
    assert reauthorize not in [
        (r["method"], r["path"]) for r in graph_sim.requests()
    ]  # the webhook only queues
    assert await _work_off(runtime) == 1
    assert reauthorize in [(r["method"], r["path"]) for r in graph_sim.requests()]
    assert await _jobs(runtime) == []


async def test_the_lifecycle_webhook_makes_no_graph_call(
    monkeypatch: pytest.MonkeyPatch, azurite: Azurite, graph_sim: GraphSim, graph_user: str
) -> None:
    """With Graph unreachable the webhook still verifies, queues and answers 202 at once."""
    settings = sandbox_settings(
        azurite.connection_string,
        graph_url="http://127.0.0.1:9/v1.0",
        dataverse_url="http://127.0.0.1:9",
        functions_url="http://127.0.0.1:9",
    )
    settings["CRMSYNC_TENANT_ID"] = graph_sim.config()["tenant_id"]
    runtime = await use_settings(monkeypatch, settings)
    try:
        record = SubscriptionRecord(
            subscription_id=str(uuid.uuid4()),
            mailbox_id=graph_user,
            resource=f"users/{graph_user}/contacts",
            client_state_hash=hash_client_state("genuine"),
            expiration=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
        )
        await (await runtime.store()).subscriptions.put(record)
        started = time.perf_counter()
        response = await registered_function("lifecycle")(
            _forged(record, "genuine", "subscriptionRemoved", runtime.settings.tenant_id)
        )
        assert response.status_code == 202
        assert time.perf_counter() - started < 1.0
        queued = await _peek(runtime, lifecycle_queue_name(runtime.settings.job_queue))
        assert [(j["subscription_id"], j["event"]) for j in queued] == [
            (record.subscription_id, "subscriptionRemoved")
        ]
    finally:
        await runtime.close()


async def test_subscription_removed_recreates_it_and_catches_up(
    runtime: Runtime, graph_sim: GraphSim, graph_sink: NotificationSink, graph_user: str
) -> None:
    record, _ = await _subscribe(runtime, graph_user)
    request = _from_graph(graph_sim, graph_sink, record, "subscriptionRemoved")
    assert record.subscription_id not in {s["id"] for s in graph_sim.subscriptions(graph_user)}
    response = await registered_function("lifecycle")(request)
    assert response.status_code == 202
    assert await _work_off(runtime) == 1
    store = await runtime.store()
    with pytest.raises(SubscriptionNotFound):
        await store.subscriptions.get(record.subscription_id)
    [replacement] = [r async for r in store.subscriptions.list_for_mailbox(graph_user)]
    assert replacement.resource == record.resource
    assert replacement.subscription_id != record.subscription_id
    live = {s["id"] for s in graph_sim.subscriptions(graph_user)}
    assert replacement.subscription_id in live
    assert [(j["resource"], j["reason"]) for j in await _jobs(runtime)] == [(record.resource, "resync")]


async def test_two_deliveries_of_one_subscription_removed_create_one_subscription(
    runtime: Runtime, graph_sim: GraphSim, graph_sink: NotificationSink, graph_user: str
) -> None:
    """Graph retries a slow answer while the first delivery is still being handled: both deliveries
    arrive together, and their work runs on two instances at once."""
    record, _ = await _subscribe(runtime, graph_user)
    request = _from_graph(graph_sim, graph_sink, record, "subscriptionRemoved")
    assert _live(graph_sim, graph_user) == []  # Graph removed the original
    answers = await asyncio.gather(*(registered_function("lifecycle")(request) for _ in range(2)))
    assert [a.status_code for a in answers] == [202, 202]
    await _work_off(runtime)
    store = await runtime.store()
    stored = [r async for r in store.subscriptions.list_for_mailbox(graph_user)]
    assert len(stored) == 1
    assert _live(graph_sim, graph_user) == [stored[0].subscription_id]


async def test_a_replay_after_the_recreation_does_nothing(
    runtime: Runtime, graph_sim: GraphSim, graph_sink: NotificationSink, graph_user: str
) -> None:
    record, _ = await _subscribe(runtime, graph_user)
    request = _from_graph(graph_sim, graph_sink, record, "subscriptionRemoved")
    assert (await registered_function("lifecycle")(request)).status_code == 202
    await _work_off(runtime)
    store = await runtime.store()
    [replacement] = [r async for r in store.subscriptions.list_for_mailbox(graph_user)]
    for _ in range(2):  # the webhook no longer knows the old id (202, nothing queued); the queue replays too
        assert (await registered_function("lifecycle")(request)).status_code == 202
    assert await _take_lifecycle_messages(runtime) == []
    replayed = LifecycleJob(subscription_id=record.subscription_id, event=LifecycleEvent.SUBSCRIPTION_REMOVED)
    await registered_function("lifecycle_worker")(
        func.QueueMessage(id="replay", body=replayed.model_dump_json().encode())
    )
    assert [r async for r in store.subscriptions.list_for_mailbox(graph_user)] == [replacement]
    assert _live(graph_sim, graph_user) == [replacement.subscription_id]


async def test_missed_notifications_trigger_a_delta_run(
    runtime: Runtime, graph_sim: GraphSim, graph_sink: NotificationSink, graph_user: str
) -> None:
    record, _ = await _subscribe(runtime, graph_user)
    response = await registered_function("lifecycle")(_from_graph(graph_sim, graph_sink, record, "missed"))
    assert response.status_code == 202
    assert await _jobs(runtime) == []
    assert await _work_off(runtime) == 1
    assert [(j["mailbox_id"], j["reason"]) for j in await _jobs(runtime)] == [(graph_user, "resync")]


async def test_forged_lifecycle_notifications_change_nothing(
    runtime: Runtime, graph_sim: GraphSim, graph_user: str
) -> None:
    record, _ = await _subscribe(runtime, graph_user)
    graph_sim.clear_requests(graph_user)
    response = await registered_function("lifecycle")(
        _forged(record, "forged", "subscriptionRemoved", runtime.settings.tenant_id)
    )
    assert response.status_code == 403
    assert await (await runtime.store()).subscriptions.get(record.subscription_id) == record
    assert await _take_lifecycle_messages(runtime) == []
    assert await _jobs(runtime) == []
    assert [r for r in graph_sim.requests() if r["method"] != "GET" and graph_user in str(r)] == []
