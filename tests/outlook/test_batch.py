"""Batched body reads and CRM stamps over the real msgraph-sdk against the simulator's ``$batch``
(learn.microsoft.com/graph/json-batching)."""

from __future__ import annotations

from typing import Any

import pytest
from msgraph.graph_service_client import GraphServiceClient

from shared.outlook.batch import BatchAnswer, retry_after_seconds
from shared.outlook.delta import DeltaReader, MessageBody
from shared.outlook.errors import GraphThrottled, MailboxNotFound
from tests.fixtures.graph_sim import GraphSim


def message_json(index: int) -> dict[str, Any]:
    content_type = "html" if index % 2 else "text"
    return {"subject": f"m{index}", "body": {"contentType": content_type, "content": f"body {index}"}}


def seed_messages(graph_sim: GraphSim, user: str, count: int) -> list[str]:
    ids: list[str] = graph_sim.seed(user, messages={"inbox": [message_json(i) for i in range(count)]})[
        "messages"
    ]["inbox"]
    graph_sim.clear_requests(user=user)
    return ids


def batches_of(graph_sim: GraphSim, user: str) -> dict[str, list[dict[str, Any]]]:
    """The mailbox's logged requests grouped by the ``$batch`` that carried them."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for entry in graph_sim.requests(user=user):
        assert entry["batch"], f"a request outside any batch: {entry['method']} {entry['path']}"
        grouped.setdefault(entry["batch"], []).append(entry)
    return grouped


async def test_bodies_of_45_messages_take_three_batch_requests(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    ids = seed_messages(graph_sim, graph_user, 45)

    bodies = await DeltaReader(graph).fetch_message_bodies(graph_user, ids)

    assert bodies == {
        message_id: MessageBody(content=f"body {i}", is_html=bool(i % 2)) for i, message_id in enumerate(ids)
    }
    batches = batches_of(graph_sim, graph_user)
    assert sorted(len(inner) for inner in batches.values()) == [5, 20, 20]
    outer = [entry for entry in graph_sim.requests() if entry["id"] in batches]
    assert [(entry["method"], entry["path"], entry["status"]) for entry in outer] == [
        ("POST", "/$batch", 200)
    ] * 3
    inner = [entry for entries in batches.values() for entry in entries]
    assert all(entry["select"] == ["body"] for entry in inner), "privacy: the body and nothing else"
    assert all('IdType="ImmutableId"' in (entry["prefer"] or "") for entry in inner)


async def test_a_message_deleted_meanwhile_comes_back_none(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    ids = seed_messages(graph_sim, graph_user, 3)
    await graph.users.by_user_id(graph_user).messages.by_message_id(ids[1]).delete()

    bodies = await DeltaReader(graph).fetch_message_bodies(graph_user, ids)

    assert bodies == {
        ids[0]: MessageBody(content="body 0", is_html=False),
        ids[1]: None,
        ids[2]: MessageBody(content="body 2", is_html=False),
    }


async def test_an_unknown_mailbox_is_not_a_missing_message(graph: GraphServiceClient) -> None:
    with pytest.raises(MailboxNotFound):
        await DeltaReader(graph).fetch_message_bodies("nobody@sim.crmsync.test", ["AAMkADany/id+="])


async def test_a_throttled_request_is_retried_alone_after_retry_after(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    ids = seed_messages(graph_sim, graph_user, 3)
    graph_sim.fault("throttle", user=graph_user, retry_after=1, count=1, path_contains=ids[2])

    bodies = await DeltaReader(graph).fetch_message_bodies(graph_user, ids)

    assert bodies[ids[2]] == MessageBody(content="body 2", is_html=False)
    first, retry = batches_of(graph_sim, graph_user).values()
    assert sorted(entry["status"] for entry in first) == [200, 200, 429]
    assert [(entry["path"], entry["status"]) for entry in retry] == [
        (f"/users/{graph_user}/messages/{ids[2]}", 200)
    ]


async def test_a_request_still_unavailable_after_the_retries_raises_graph_throttled(
    graph: GraphServiceClient, graph_sim: GraphSim, graph_user: str
) -> None:
    ids = seed_messages(graph_sim, graph_user, 2)
    graph_sim.fault("status", user=graph_user, status=503, retry_after=0, count=None, path_contains=ids[0])
    try:
        with pytest.raises(GraphThrottled) as raised:
            await DeltaReader(graph).fetch_message_bodies(graph_user, ids)
    finally:
        graph_sim.clear_faults(user=graph_user)
    assert raised.value.status == 503
    assert [len(inner) for inner in batches_of(graph_sim, graph_user).values()] == [2, 1, 1, 1]


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({}, 1.0),
        ({"Retry-After": "soon"}, 1.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(header: dict[str, str], seconds: float) -> None:
    """RFC 9110 Retry-After: delay-seconds or an HTTP-date (a past date: retry now); 1 s otherwise."""
    assert retry_after_seconds(BatchAnswer(429, header, None)) == seconds
