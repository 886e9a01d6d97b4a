"""Subscriptions and webhook notifications, over real HTTP to a real loopback endpoint."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import httpx

from simulators.graph.notify import MAX_PER_POST
from simulators.graph.sink import NotificationSink
from tests.fixtures.graph_sim import GraphSim
from tests.graph_sim.conftest import minutes_from_now, seg, subscribe


def _wait(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_creation_validates_both_endpoints(
    graph: httpx.Client, graph_user: str, graph_sink: NotificationSink
) -> None:
    """learn.microsoft.com/graph/api/subscription-post-subscriptions: Graph POSTs ?validationToken to
    notificationUrl and lifecycleNotificationUrl and expects the token echoed as text/plain."""
    answer = subscribe(graph, graph_sink, f"users/{graph_user}/messages")
    assert answer.status_code == 201, answer.text
    subscription = answer.json()
    assert len(graph_sink.validations) == 2
    assert subscription["clientState"] == "secret-client-state"
    assert subscription["expirationDateTime"].endswith("Z")
    assert (
        graph.get(f"subscriptions/{subscription['id']}").json()["resource"] == f"users/{graph_user}/messages"
    )


def test_failed_validation_refuses_the_subscription(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str, graph_sink: NotificationSink
) -> None:
    """learn.microsoft.com/graph/change-notifications-delivery-webhooks: no echo, no subscription (400)."""
    graph_sink.echo_validation = False
    answer = subscribe(graph, graph_sink, f"users/{graph_user}/contacts")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "ValidationError"
    assert graph_sim.subscriptions(user=graph_user) == []


def test_maximum_lifetimes(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str, graph_sink: NotificationSink
) -> None:
    """learn.microsoft.com/graph/api/resources/subscription (lifetime): 10080 minutes for Outlook
    mail/events/contacts, 4230 for To Do tasks."""
    assert subscribe(graph, graph_sink, f"users/{graph_user}/events", minutes=10090).status_code == 400
    assert subscribe(graph, graph_sink, f"users/{graph_user}/events", minutes=10070).status_code == 201
    list_id = graph_sim.user_info(graph_user)["defaultTodoList"]
    tasks = f"users/{graph_user}/todo/lists/{list_id}/tasks"
    assert subscribe(graph, graph_sink, tasks, minutes=4240).status_code == 400
    assert subscribe(graph, graph_sink, tasks, minutes=4220).status_code == 201


def test_duplicate_is_409_and_renew_reauthorize_delete(
    graph: httpx.Client, graph_user: str, graph_sink: NotificationSink
) -> None:
    """subscription-post-subscriptions (409 on a duplicate), subscription-update (renew),
    subscription-reauthorize (204) and subscription-delete."""
    created = subscribe(graph, graph_sink, f"users/{graph_user}/contacts").json()
    assert subscribe(graph, graph_sink, f"users/{graph_user}/contacts").status_code == 409
    renewed = graph.patch(
        f"subscriptions/{created['id']}", json={"expirationDateTime": minutes_from_now(600)}
    )
    assert renewed.status_code == 200
    assert renewed.json()["expirationDateTime"] > created["expirationDateTime"]
    assert (
        graph.patch(
            f"subscriptions/{created['id']}", json={"expirationDateTime": minutes_from_now(20000)}
        ).status_code
        == 400
    )
    assert graph.post(f"subscriptions/{created['id']}/reauthorize").status_code == 204
    assert graph.delete(f"subscriptions/{created['id']}").status_code == 204
    assert graph.get(f"subscriptions/{created['id']}").status_code == 404


def test_patch_may_change_the_notification_url_alone(
    graph: httpx.Client, graph_user: str, graph_sink: NotificationSink
) -> None:
    """subscription-update: renew by extending the expiry, or update the notificationUrl, either alone."""
    created = subscribe(graph, graph_sink, f"users/{graph_user}/contacts").json()
    moved = graph.patch(
        f"subscriptions/{created['id']}", json={"notificationUrl": graph_sink.url + "?moved=1"}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["notificationUrl"].endswith("?moved=1")
    assert moved.json()["expirationDateTime"] == created["expirationDateTime"]
    assert graph.patch(f"subscriptions/{created['id']}", json={}).status_code == 400


def test_resource_data_needs_an_encryption_certificate_and_is_not_simulated(
    graph: httpx.Client, graph_user: str, graph_sink: NotificationSink
) -> None:
    """resources/subscription: encryptionCertificate is "required when includeResourceData is true";
    the simulator sends no resource data, so it refuses such a subscription instead of ignoring it."""
    resource = f"users/{graph_user}/messages"
    assert subscribe(graph, graph_sink, resource, includeResourceData=True).status_code == 400
    with_certificate = {
        "includeResourceData": True,
        "encryptionCertificate": "MIIB",
        "encryptionCertificateId": "c",
    }
    assert subscribe(graph, graph_sink, resource, **with_certificate).status_code == 400
    assert all(s["resource"] != resource for s in graph.get("subscriptions").json()["value"])


def test_an_expiration_under_45_minutes_is_set_to_45_minutes(
    graph: httpx.Client, graph_user: str, graph_sink: NotificationSink
) -> None:
    """learn.microsoft.com/graph/api/resources/subscription, expirationDateTime: "Any value under 45
    minutes after the time of the request is automatically set to 45 minutes after the request time"."""
    before = dt.datetime.now(dt.UTC)
    answer = subscribe(graph, graph_sink, f"users/{graph_user}/contacts", minutes=0.04)
    assert answer.status_code == 201, answer.text
    expires = dt.datetime.fromisoformat(answer.json()["expirationDateTime"].replace("Z", "+00:00"))
    assert before + dt.timedelta(minutes=45) <= expires < before + dt.timedelta(minutes=46)
    renewed = graph.patch(
        f"subscriptions/{answer.json()['id']}", json={"expirationDateTime": minutes_from_now(1)}
    ).json()
    assert renewed["expirationDateTime"] >= answer.json()["expirationDateTime"]


def test_expired_subscription_is_gone(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str, graph_sink: NotificationSink
) -> None:
    """learn.microsoft.com/graph/api/resources/subscription: a subscription ends at expirationDateTime."""
    answer = subscribe(graph, graph_sink, f"users/{graph_user}/contacts")
    assert answer.status_code == 201, answer.text
    assert graph.get(f"subscriptions/{answer.json()['id']}").status_code == 200
    graph_sim.expire_subscription(answer.json()["id"])
    assert graph.get(f"subscriptions/{answer.json()['id']}").status_code == 404


def test_notification_payload(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str, graph_sink: NotificationSink
) -> None:
    """learn.microsoft.com/graph/change-notifications-delivery-webhooks: value[] with subscriptionId,
    clientState, changeType, resource, resourceData (@odata.type/id/etag, id), tenantId,
    subscriptionExpirationDateTime; ids immutable when the subscription asked for them."""
    subscription = subscribe(graph, graph_sink, f"users/{graph_user}/mailFolders('inbox')/messages").json()
    message_id = graph_sim.seed(graph_user, messages={"inbox": [{"subject": "hi"}]})["messages"]["inbox"][0]
    graph_sim.seed(graph_user, messages={"sentitems": [{"subject": "not this folder"}]})
    [notification] = graph_sink.wait_for(1)
    assert notification["subscriptionId"] == subscription["id"]
    assert notification["clientState"] == "secret-client-state"
    assert notification["changeType"] == "created"
    assert notification["resource"] == f"Users/{graph_user}/Messages/{message_id}"
    assert notification["resourceData"]["id"] == message_id
    assert notification["resourceData"]["@odata.type"] == "#Microsoft.Graph.Message"
    assert notification["resourceData"]["@odata.etag"].startswith('W/"')
    assert notification["tenantId"]
    assert notification["subscriptionExpirationDateTime"] == subscription["expirationDateTime"]
    graph.delete(f"users/{graph_user}/messages/{seg(message_id)}")
    assert graph_sink.wait_for(2)[1]["changeType"] == "deleted"


def test_notifications_waiting_for_a_connection_share_a_post(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str, graph_sink: NotificationSink
) -> None:
    """learn.microsoft.com/graph/api/resources/changenotificationcollection: ``value`` is the set of
    notifications sent in one POST. A burst's notifications go out together, each exactly once."""
    subscribe(graph, graph_sink, f"users/{graph_user}/contacts")
    contacts = [{"givenName": "Burst", "surname": str(n)} for n in range(250)]
    ids = graph_sim.seed(graph_user, contacts=contacts)["contacts"]

    notified = graph_sink.wait_for(250)
    assert sorted(n["resourceData"]["id"] for n in notified) == sorted(ids)
    posts = [d for d in graph_sim.deliveries(user=graph_user) if d["kind"] == "notification"]
    assert len(posts) <= 10  # 250 one by one before
    assert max(len(post["payload"]["value"]) for post in posts) <= MAX_PER_POST


def test_failed_or_slow_deliveries_are_retried(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str, graph_sink: NotificationSink
) -> None:
    """learn.microsoft.com/graph/change-notifications-delivery-webhooks: a non-2xx answer or one slower
    than the timeout is retried with backoff (at-least-once)."""
    subscribe(graph, graph_sink, f"users/{graph_user}/contacts")
    graph_sink.status = 503
    graph_sim.seed(graph_user, contacts=[{"givenName": "Retry"}])
    graph_sink.wait_for(2)
    graph_sink.status = 202
    _wait(lambda: any(d["outcome"] == "202" for d in graph_sim.deliveries(user=graph_user)))
    outcomes = [d["outcome"] for d in graph_sim.deliveries(user=graph_user) if d["kind"] == "notification"]
    assert outcomes[0] == "503"
    assert outcomes[-1] == "202"
    graph_sink.delay = 1.5  # beyond the fixture's 1 s notification timeout
    graph_sim.seed(graph_user, contacts=[{"givenName": "Slow"}])
    _wait(lambda: any(d["outcome"] == "timeout" for d in graph_sim.deliveries(user=graph_user)))
    graph_sink.delay = 0.0


def test_notification_faults_drop_duplicate_reorder(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str, graph_sink: NotificationSink
) -> None:
    """Graph promises neither exactly-once nor ordering (change-notifications-delivery-webhooks);
    the control API's faults make both visible."""
    subscribe(graph, graph_sink, f"users/{graph_user}/contacts", changeType="created")
    graph_sim.fault("drop_notifications", user=graph_user, count=1)
    graph_sim.seed(graph_user, contacts=[{"givenName": "Dropped"}])
    graph_sim.fault("duplicate_notifications", user=graph_user, count=1)
    duplicated = graph_sim.seed(graph_user, contacts=[{"givenName": "Twice"}])["contacts"][0]
    received = graph_sink.wait_for(2)
    assert [n["resourceData"]["id"] for n in received] == [duplicated, duplicated]
    graph_sim.fault("reorder_notifications", user=graph_user, count=2)
    first = graph_sim.seed(graph_user, contacts=[{"givenName": "First"}])["contacts"][0]
    second = graph_sim.seed(graph_user, contacts=[{"givenName": "Second"}])["contacts"][0]
    later = graph_sink.wait_for(4)[2:]
    assert [n["resourceData"]["id"] for n in later] == [second, first], "held, then sent newest first"
    outcomes = [d["outcome"] for d in graph_sim.deliveries(user=graph_user)]
    assert "dropped (fault)" in outcomes


def test_lifecycle_notifications(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str, graph_sink: NotificationSink
) -> None:
    """learn.microsoft.com/graph/change-notifications-lifecycle-events: reauthorizationRequired, missed
    and subscriptionRemoved go to lifecycleNotificationUrl; a removed subscription is gone."""
    subscription = subscribe(graph, graph_sink, f"users/{graph_user}/events").json()
    for event in ("reauthorizationRequired", "missed", "subscriptionRemoved"):
        graph_sim.lifecycle(subscription["id"], event)
    received = graph_sink.wait_for(3, path="/lifecycle")
    assert sorted(n["lifecycleEvent"] for n in received) == [
        "missed",
        "reauthorizationRequired",
        "subscriptionRemoved",
    ]
    assert {n["subscriptionId"] for n in received} == {subscription["id"]}
    assert {n["clientState"] for n in received} == {"secret-client-state"}
    assert graph.get(f"subscriptions/{subscription['id']}").status_code == 404


def test_undeliverable_notifications_end_in_a_missed_lifecycle_event(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str, graph_sink: NotificationSink
) -> None:
    """learn.microsoft.com/graph/change-notifications-lifecycle-events: when notifications could not
    be delivered, Graph sends ``missed`` to the lifecycle URL (the client should resync by delta)."""
    subscription = subscribe(graph, graph_sink, f"users/{graph_user}/contacts").json()
    graph_sink.status = 500
    graph_sim.seed(graph_user, contacts=[{"givenName": "Lost"}])
    [missed] = graph_sink.wait_for(1, path="/lifecycle")
    assert missed["lifecycleEvent"] == "missed"
    assert missed["subscriptionId"] == subscription["id"]
    attempts = [d for d in graph_sim.deliveries(user=graph_user) if d["kind"] == "notification"]
    assert len(attempts) == graph_sim.config()["retry_max_attempts"]


def test_move_notifies_deleted_under_the_old_id_and_created_under_the_new(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str, graph_sink: NotificationSink
) -> None:
    """learn.microsoft.com/graph/outlook-immutable-id: without immutable ids a move changes the id, so a
    mailbox-wide subscription hears of the old id leaving and the new id arriving."""
    body = {
        "changeType": "created,deleted",
        "notificationUrl": graph_sink.url,
        "resource": f"users/{graph_user}/messages",
        "expirationDateTime": minutes_from_now(30),
    }
    assert graph.post("subscriptions", json=body).status_code == 201
    [immutable_id] = graph_sim.seed(graph_user, messages={"inbox": [{"subject": "x"}]})["messages"]["inbox"]
    old_id = graph.get(f"users/{graph_user}/messages/{seg(immutable_id)}").json()["id"]
    new_id = graph.post(
        f"users/{graph_user}/messages/{seg(old_id)}/move", json={"destinationId": "archive"}
    ).json()["id"]
    received = {(n["changeType"], n["resourceData"]["id"]) for n in graph_sink.wait_for(3)}
    assert received == {("created", old_id), ("deleted", old_id), ("created", new_id)}, (
        "delivery order is not promised"
    )
