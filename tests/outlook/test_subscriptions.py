"""Subscriptions over HTTP against the simulator, with a real webhook endpoint answering the handshake."""

from __future__ import annotations

import datetime as dt
import hmac
import json

import pytest
from msgraph.graph_service_client import GraphServiceClient

from shared.outlook.errors import GraphError
from shared.outlook.notifications import (
    ChangeType,
    LifecycleEvent,
    parse_lifecycle_notifications,
    parse_notifications,
)
from shared.outlook.subscriptions import MAX_LIFETIME, ResourceKind, SubscriptionManager, resource_path
from simulators.graph.sink import NotificationSink
from tests.fixtures.graph_sim import GraphSim


def manager(graph: GraphServiceClient, sink: NotificationSink) -> SubscriptionManager:
    return SubscriptionManager(graph, notification_url=sink.url, lifecycle_url=sink.lifecycle_url)


def simulated(graph_sim: GraphSim, user: str, subscription_id: str) -> dict[str, object]:
    return next(s for s in graph_sim.subscriptions(user=user) if s["id"] == subscription_id)


async def test_create_validates_both_endpoints_and_notifications_carry_the_client_state(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_sink: NotificationSink, graph_user: str
) -> None:
    created = await manager(graph, graph_sink).create(graph_user, ResourceKind.CONTACTS)

    assert created.resource == f"users/{graph_user}/contacts"
    assert len(created.client_state) >= 43
    assert len(graph_sink.validations) == 2  # notification and lifecycle URL
    remote = simulated(graph_sim, graph_user, created.id)
    assert remote["lifecycleNotificationUrl"] == graph_sink.lifecycle_url
    assert remote["changeType"] == "created,updated,deleted"
    assert created.expires <= dt.datetime.now(dt.UTC) + MAX_LIFETIME[ResourceKind.CONTACTS]

    contact_id = graph_sim.seed(graph_user, contacts=[{"givenName": "Ada"}])["contacts"][0]
    graph_sink.wait_for(1, timeout=10)

    raw = json.dumps({"value": graph_sink.notifications()}).encode()
    [notification] = parse_notifications(raw, max_bytes=1_000_000)
    assert notification.subscription_id == created.id
    assert notification.change_type is ChangeType.CREATED
    assert notification.resource_data is not None
    assert notification.resource_data.id == contact_id  # immutable ids in notifications too
    assert notification.client_state is not None
    assert hmac.compare_digest(notification.client_state, created.client_state)


async def test_renew_caps_the_expiry_at_the_resource_maximum(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_sink: NotificationSink, graph_user: str
) -> None:
    subscriptions = manager(graph, graph_sink)
    list_id = graph_sim.user_info(graph_user)["defaultTodoList"]
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    created = await subscriptions.create(
        graph_user, ResourceKind.TASKS, ("updated",), soon, task_list_id=list_id
    )
    assert created.resource == f"users/{graph_user}/todo/lists/{list_id}/tasks"
    assert abs(created.expires - soon) < dt.timedelta(seconds=1)

    renewed = await subscriptions.renew(created.id, ResourceKind.TASKS, soon + dt.timedelta(days=30))

    ceiling = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=4230)
    assert ceiling - dt.timedelta(minutes=10) < renewed <= ceiling
    assert simulated(graph_sim, graph_user, created.id)["expirationDateTime"] is not None


async def test_reauthorize_answers_the_lifecycle_notification(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_sink: NotificationSink, graph_user: str
) -> None:
    subscriptions = manager(graph, graph_sink)
    created = await subscriptions.create(graph_user, ResourceKind.EVENTS)

    graph_sim.lifecycle(created.id, "reauthorizationRequired")
    graph_sink.wait_for(1, path="/lifecycle", timeout=10)
    body = json.dumps({"value": graph_sink.notifications("/lifecycle")}).encode()
    [lifecycle] = parse_lifecycle_notifications(body, max_bytes=1_000_000)

    assert lifecycle.lifecycle_event is LifecycleEvent.REAUTHORIZATION_REQUIRED
    assert lifecycle.subscription_id == created.id
    await subscriptions.reauthorize(lifecycle.subscription_id)


async def test_delete_is_idempotent_and_recreate_issues_a_new_secret(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_sink: NotificationSink, graph_user: str
) -> None:
    subscriptions = manager(graph, graph_sink)
    first = await subscriptions.create(graph_user, ResourceKind.MESSAGES)
    assert first.resource == f"users/{graph_user}/mailFolders('inbox')/messages"

    second = await subscriptions.recreate(first.id, graph_user, ResourceKind.MESSAGES)

    assert second.id != first.id
    assert second.client_state != first.client_state
    assert [s["id"] for s in graph_sim.subscriptions(user=graph_user)] == [second.id]
    await subscriptions.delete(second.id)
    await subscriptions.delete(second.id)  # already gone: fine
    assert graph_sim.subscriptions(user=graph_user) == []


async def test_failed_validation_handshake_is_a_graph_error(
    graph: GraphServiceClient, graph_sink: NotificationSink, graph_user: str
) -> None:
    graph_sink.echo_validation = False

    with pytest.raises(GraphError) as caught:
        await manager(graph, graph_sink).create(graph_user, ResourceKind.CONTACTS)

    assert (caught.value.status, caught.value.code) == (400, "ValidationError")


def test_resource_paths_and_expiry_rules(graph: GraphServiceClient) -> None:
    fixed = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
    subscriptions = SubscriptionManager(graph, notification_url="n", lifecycle_url="l", clock=lambda: fixed)

    assert subscriptions.expiry(ResourceKind.MESSAGES) == fixed + dt.timedelta(minutes=10080 - 5)
    assert subscriptions.expiry(ResourceKind.TASKS) == fixed + dt.timedelta(minutes=4230 - 5)
    assert subscriptions.expiry(ResourceKind.EVENTS, fixed + dt.timedelta(hours=2)) == fixed + dt.timedelta(
        hours=2
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        subscriptions.expiry(ResourceKind.EVENTS, dt.datetime(2026, 11, 23))
    with pytest.raises(ValueError, match="task_list_id"):
        resource_path(ResourceKind.TASKS, "u")
