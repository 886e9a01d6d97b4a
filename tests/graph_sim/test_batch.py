"""JSON batching (learn.microsoft.com/graph/json-batching, "Combine multiple HTTP requests using JSON
batching") and the delta page-size cap, over HTTP against the simulator."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from tests.fixtures.graph_sim import GraphSim
from tests.graph_sim.conftest import seg

IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}
MISSING = "AAMkADmissing/item+id="


def get(request_id: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"id": request_id, "method": "GET", "url": url, **extra}


def post_batch(graph: httpx.Client, requests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """POST /$batch; the answers keyed by request id (Graph may answer in any order)."""
    answer = graph.post("$batch", json={"requests": requests})
    assert answer.status_code == 200, answer.text
    responses = answer.json()["responses"]
    assert len(responses) == len(requests)
    return {r["id"]: r for r in responses}


def test_each_request_is_answered_as_if_sent_alone(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """Ids echoed, per-request headers (Prefer IdType) honoured, a PATCH body applied, a missing item
    404 ErrorItemNotFound; every request is in the request log, tagged with its batch."""
    [message] = graph_sim.seed(graph_user, messages={"inbox": [{"subject": "hello"}]})["messages"]["inbox"]
    [contact] = graph_sim.seed(graph_user, contacts=[{"givenName": "Ada"}])["contacts"]
    graph_sim.clear_requests(user=graph_user)
    message_url = f"/users/{graph_user}/messages/{seg(message)}"
    answers = post_batch(
        graph,
        [
            get("immutable", f"{message_url}?$select=subject", headers=IMMUTABLE),
            get("rest", f"{message_url}?$select=subject"),
            {
                "id": "rename",
                "method": "PATCH",
                "url": f"/users/{graph_user}/contacts/{seg(contact)}",
                "headers": {"Content-Type": "application/json"},
                "body": {"surname": "Lovelace"},
            },
            get("gone", f"/users/{graph_user}/messages/{seg(MISSING)}"),
        ],
    )

    assert answers["immutable"]["status"] == 200
    assert answers["immutable"]["body"]["id"] == message
    assert answers["immutable"]["body"]["subject"] == "hello"
    assert 'IdType="ImmutableId"' in answers["immutable"]["headers"]["Preference-Applied"]
    assert answers["rest"]["body"]["id"] != message, "without the Prefer header: the REST id"
    assert answers["rename"]["status"] == 200
    assert answers["rename"]["body"]["surname"] == "Lovelace"
    assert graph.get(f"users/{graph_user}/contacts/{seg(contact)}").json()["surname"] == "Lovelace"
    assert answers["gone"]["status"] == 404
    assert answers["gone"]["body"]["error"]["code"] == "ErrorItemNotFound"

    inner = graph_sim.requests(user=graph_user)[:-1]  # the last one is the GET above
    [batch_id] = {entry["batch"] for entry in inner}
    assert sorted(entry["status"] for entry in inner) == [200, 200, 200, 404]
    [outer] = [entry for entry in graph_sim.requests() if entry["id"] == batch_id]
    assert (outer["method"], outer["path"], outer["status"], outer["batch"]) == ("POST", "/$batch", 200, None)


def test_more_than_twenty_requests_is_a_400_that_runs_nothing(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    requests = [get(str(i), f"/users/{graph_user}/contacts") for i in range(21)]
    answer = graph.post("$batch", json={"requests": requests})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "BadRequest"
    assert graph_sim.requests(user=graph_user) == []
    assert graph.post("$batch", json={"requests": requests[:20]}).status_code == 200


@pytest.mark.parametrize(
    "requests",
    [
        [get("1", "/users"), get("1", "/users")],
        [get("1", "https://graph.microsoft.com/v1.0/users")],
        [get("1", "/$batch")],
        [{"id": "1", "method": "PATCH", "url": "/users", "body": {"a": 1}}],
        [get("1", "/users", dependsOn=["2"]), get("2", "/users", dependsOn=["1"])],
        [get("1", "/users", dependsOn=["nope"])],
    ],
    ids=["duplicate-id", "absolute-url", "nested-batch", "body-without-content-type", "cycle", "unknown"],
)
def test_malformed_batches_are_400(graph: httpx.Client, requests: list[dict[str, Any]]) -> None:
    assert graph.post("$batch", json={"requests": requests}).status_code == 400


def test_the_batch_needs_the_bearer_token(graph_sim: GraphSim, graph_user: str) -> None:
    with httpx.Client(base_url=graph_sim.base_url + "/", trust_env=False) as anonymous:
        answer = anonymous.post(
            "$batch",
            json={"requests": [get("1", f"/users/{graph_user}/contacts")]},
            headers={"Authorization": ""},
        )
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert graph_sim.requests(user=graph_user) == []


def test_a_throttled_request_is_429_with_retry_after_inside_a_200_batch(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """learn.microsoft.com/graph/throttling: each request of a batch is throttled on its own."""
    graph_sim.fault("throttle", user=graph_user, retry_after=7, count=1, path_contains="/contacts")
    answers = post_batch(
        graph, [get("contacts", f"/users/{graph_user}/contacts"), get("user", f"/users/{graph_user}")]
    )
    assert answers["contacts"]["status"] == 429
    assert answers["contacts"]["headers"]["Retry-After"] == "7"
    assert answers["contacts"]["body"]["error"]["code"] == "TooManyRequests"
    assert answers["user"]["status"] == 200


def test_requests_run_at_most_four_at_a_time_within_the_mailbox_limit(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """throttling-limits, "Outlook service limits": Graph sends the Outlook service up to four requests of
    a batch at a time, so eight slow requests to one mailbox stay under its concurrency limit of 4."""
    graph_sim.fault("latency", user=graph_user, seconds=0.15, count=8)
    answers = post_batch(graph, [get(str(i), f"/users/{graph_user}/contacts") for i in range(8)])
    assert sorted(a["status"] for a in answers.values()) == [200] * 8


def test_depends_on_runs_in_order_and_a_failed_dependency_is_424(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    created = {
        "id": "create",
        "method": "POST",
        "url": f"/users/{graph_user}/contacts",
        "headers": {"Content-Type": "application/json"},
        "body": {"givenName": "Grace"},
    }
    answers = post_batch(
        graph,
        [
            get("list", f"/users/{graph_user}/contacts", dependsOn=["create"]),
            created,
            get("missing", f"/users/{graph_user}/contacts/{seg(MISSING)}"),
            get("after-missing", f"/users/{graph_user}", dependsOn=["missing"]),
        ],
    )
    assert answers["create"]["status"] == 201
    assert [c["givenName"] for c in answers["list"]["body"]["value"]] == ["Grace"]
    assert answers["missing"]["status"] == 404
    assert answers["after-missing"]["status"] == 424
    assert all(entry["path"] != f"/users/{graph_user}" for entry in graph_sim.requests(user=graph_user))


def _delta_url(graph_sim: GraphSim, user: str, kind: str) -> str:
    if kind == "messages":
        graph_sim.seed(user, messages={"inbox": [{"subject": f"m{i}"} for i in range(205)]})
        return f"users/{user}/mailFolders/inbox/messages/delta"
    if kind == "contacts":
        graph_sim.seed(user, contacts=[{"givenName": f"c{i}"} for i in range(205)])
        return f"users/{user}/contacts/delta"
    if kind == "tasks":
        graph_sim.seed(user, todo={"defaultList": [{"title": f"t{i}"} for i in range(205)]})
        return f"users/{user}/todo/lists/{seg(graph_sim.user_info(user)['defaultTodoList'])}/tasks/delta"
    graph_sim.seed(user, events=[_event(f"e{i}", hours=i) for i in range(205)])
    return (
        f"users/{user}/calendarView/delta?startDateTime=2030-01-01T00:00:00Z&endDateTime=2030-02-01T00:00:00Z"
    )


def _event(subject: str, *, hours: int) -> dict[str, Any]:
    start = dt.datetime(2030, 1, 1, 9) + dt.timedelta(hours=hours)
    end = start + dt.timedelta(minutes=30)
    return {
        "subject": subject,
        "start": {"dateTime": start.isoformat(), "timeZone": "UTC"},
        "end": {"dateTime": end.isoformat(), "timeZone": "UTC"},
    }


@pytest.mark.parametrize("kind", ["messages", "contacts", "tasks", "calendarView"])
def test_delta_pages_are_capped_at_200(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str, kind: str
) -> None:
    """Graph caps odata.maxpagesize on delta at 200 (learn.microsoft.com/en-us/answers/a/2052165) and says
    so in Preference-Applied; 205 changes come as 200 + 5."""
    url = _delta_url(graph_sim, graph_user, kind)
    first = graph.get(url, headers={"Prefer": "odata.maxpagesize=500"})
    assert first.status_code == 200, first.text
    assert first.headers["Preference-Applied"] == "odata.maxpagesize=200"
    assert len(first.json()["value"]) == 200
    second = graph.get(first.json()["@odata.nextLink"]).json()
    assert len(second["value"]) == 5
    assert "@odata.deltaLink" in second
