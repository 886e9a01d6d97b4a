"""Application permissions: an app-only token's ``roles`` claim decides what it may call
(simulators/graph/auth.py cites each endpoint's permissions table), and the connector's app has the
roles README step 2 grants."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from shared.outlook.credentials import SANDBOX_TOKEN as CONNECTOR_SENDS
from simulators.graph.app import Simulator
from simulators.graph.auth import route_roles
from simulators.graph.sink import NotificationSink
from simulators.sandbox import CONNECTOR_GRAPH_ROLES, CONNECTOR_TOKEN
from tests.fixtures.graph_sim import GraphSim
from tests.graph_sim.conftest import minutes_from_now, seg

README = Path(__file__).resolve().parents[2] / "README.md"
START = {"dateTime": "2030-03-04T09:00:00", "timeZone": "UTC"}
END = {"dateTime": "2030-03-04T10:00:00", "timeZone": "UTC"}


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _error(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, str(answer.json()["error"]["code"])


def test_a_token_without_the_role_gets_403_and_changes_nothing(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str, graph_sink: NotificationSink
) -> None:
    """resolve-auth-errors (403 for missing permissions); user-get (Application: User.Read.All),
    user-post-events (Calendars.ReadWrite), subscription-post-subscriptions (the resource's read
    permission), json-batching (each request is authorized on its own)."""
    contacts_only = _as(graph_sim.issue_token(["Contacts.ReadWrite"]))
    assert _error(graph.get(f"users/{graph_user}", headers=contacts_only)) == (
        403,
        "Authorization_RequestDenied",
    )
    event = {"subject": "Review", "start": START, "end": END}
    refused = graph.post(f"users/{graph_user}/events", json=event, headers=contacts_only)
    assert _error(refused) == (403, "ErrorAccessDenied")
    assert refused.json()["error"]["message"] == "Access is denied. Check credentials and try again."
    assert graph.get(f"users/{graph_user}/events").json()["value"] == []
    subscription = {
        "changeType": "created",
        "notificationUrl": graph_sink.url,
        "resource": f"users/{graph_user}/events",
        "expirationDateTime": minutes_from_now(60),
    }
    assert _error(graph.post("subscriptions", json=subscription, headers=contacts_only)) == (
        403,
        "ExtensionError",
    )
    assert graph_sim.subscriptions(user=graph_user) == []
    assert graph_sink.received == []  # not even the validation handshake
    batch = {
        "requests": [
            {"id": "1", "method": "POST", "url": f"/users/{graph_user}/contacts",
             "headers": {"Content-Type": "application/json"}, "body": {"givenName": "Ada"}},
            {"id": "2", "method": "DELETE", "url": f"/users/{graph_user}/messages/{seg('AAMkAD+x/y=')}"},
        ]
    }  # fmt: skip
    answers = {
        r["id"]: r for r in graph.post("$batch", json=batch, headers=contacts_only).json()["responses"]
    }
    assert (answers["1"]["status"], answers["2"]["status"]) == (201, 403)
    assert [c["givenName"] for c in graph.get(f"users/{graph_user}/contacts").json()["value"]] == ["Ada"]
    read_only = _as(graph_sim.issue_token(["Contacts.Read"]))
    contact_id = answers["1"]["body"]["id"]
    assert graph.get(f"users/{graph_user}/contacts/{seg(contact_id)}", headers=read_only).status_code == 200
    patch = graph.patch(
        f"users/{graph_user}/contacts/{seg(contact_id)}", json={"givenName": "Eve"}, headers=read_only
    )
    assert _error(patch) == (403, "ErrorAccessDenied")
    assert graph.get(f"users/{graph_user}/contacts/{seg(contact_id)}").json()["givenName"] == "Ada"


def test_the_documented_roles_open_each_endpoint(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """user-get accepts User.Read.All or Directory.Read.All, not User.ReadBasic.All for an app;
    todotask-post-linkedresources: "Application: Not supported" even with Tasks.ReadWrite.All, while a
    task created with its linkedResources needs Tasks.ReadWrite.All (todotasklist-post-tasks)."""
    for roles, status in (
        (["User.Read.All"], 200),
        (["Directory.Read.All"], 200),
        (["User.ReadBasic.All"], 403),
    ):
        assert (
            graph.get(f"users/{graph_user}", headers=_as(graph_sim.issue_token(roles))).status_code == status
        )
    tasks = _as(graph_sim.issue_token(["Tasks.ReadWrite.All"]))
    base = f"users/{graph_user}/todo/lists/{seg(graph_sim.user_info(graph_user)['defaultTodoList'])}/tasks"
    link = {"applicationName": "Dynamics 365", "externalId": "x", "displayName": "x", "webUrl": None}
    task = graph.post(base, json={"title": "Call", "linkedResources": [link]}, headers=tasks)
    assert task.status_code == 201
    linked = f"{base}/{seg(task.json()['id'])}/linkedResources"
    assert _error(graph.post(linked, json=link, headers=tasks)) == (403, "ErrorAccessDenied")
    assert len(graph.get(linked, headers=tasks).json()["value"]) == 1
    assert graph.get(base, headers=_as(graph_sim.issue_token(["Tasks.Read.All"]))).status_code == 200
    assert graph.get(base, headers=_as(graph_sim.issue_token(["Calendars.ReadWrite"]))).status_code == 403


def _readme_roles() -> set[str]:
    """The permissions README step 2 grants: its prose list and its `az` loop must agree."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### 2. Register the Entra app") : text.index("### 3.")]
    loop = re.search(r"for permission in ([^;]+); do", section)
    assert loop is not None
    prose = section[: section.index("APP_ID=")]
    listed = set(re.findall(r"`([A-Za-z]+\.[A-Za-z.]+)`", prose)) - {"User.ReadBasic.All"}
    granted = set(loop.group(1).split())
    assert listed == granted
    return granted


def test_the_connector_token_carries_the_roles_the_deployment_grants(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """The sandbox and the fixtures give crmsync's token what README step 2 consents to, so an endpoint
    the deployed app may not call fails in tests too (GET /users needs User.Read.All)."""
    assert CONNECTOR_TOKEN == CONNECTOR_SENDS
    assert set(CONNECTOR_GRAPH_ROLES) == _readme_roles()
    assert "User.Read.All" in CONNECTOR_GRAPH_ROLES
    connector = _as(CONNECTOR_TOKEN)
    answers: dict[str, Any] = {
        "user": graph.get(f"users/{graph_user}", headers=connector).status_code,
        "categories": graph.get(
            f"users/{graph_user}/outlook/masterCategories", headers=connector
        ).status_code,
        "events": graph.post(
            f"users/{graph_user}/events", json={"subject": "x", "start": START, "end": END}, headers=connector
        ).status_code,
    }
    assert answers == {"user": 200, "categories": 200, "events": 201}


def test_every_graph_route_names_the_roles_it_needs() -> None:
    """No endpoint is open to any app-only token by omission: each route and method maps to the roles
    of its page's permissions table (subscriptions check their resource's read permission)."""
    routes = Simulator().router.routes
    unchecked = [
        f"{method} {'/'.join(route.pattern)}"
        for route in routes
        for method in route.handlers
        if route_roles(method, "/".join(route.pattern)) is None
        and route.pattern[0] not in ("subscriptions", "$batch")
    ]
    assert unchecked == []
    assert len(routes) > 30
