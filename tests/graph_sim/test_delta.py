"""Delta query rounds (learn.microsoft.com/graph/delta-query-overview and the per-resource pages)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fixtures.graph_sim import GraphSim
from tests.graph_sim.conftest import seg

IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


def run_round(
    graph: httpx.Client, url: str, headers: dict[str, str] | None = None
) -> tuple[list[Any], str, int]:
    """Follow nextLinks verbatim until the deltaLink; return (items, deltaLink, pages)."""
    items: list[Any] = []
    pages = 0
    while True:
        page = graph.get(url, headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        items.extend(body["value"])
        pages += 1
        if "@odata.deltaLink" in body:
            assert "@odata.nextLink" not in body
            return items, body["@odata.deltaLink"], pages
        url = body["@odata.nextLink"]
        assert "$skiptoken=" in url


def test_message_delta_pages_removes_and_moves(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """learn.microsoft.com/graph/api/message-delta: per folder; Prefer odata.maxpagesize; $select kept
    in the token; deleted or moved-out messages come back as @removed."""
    ids = graph_sim.seed(graph_user, messages={"inbox": [{"subject": f"m{i}"} for i in range(5)]})[
        "messages"
    ]["inbox"]
    headers = {**IMMUTABLE, "Prefer": 'IdType="ImmutableId", odata.maxpagesize=2'}
    first, delta_link, pages = run_round(
        graph, f"users/{graph_user}/mailFolders/inbox/messages/delta?$select=subject", headers
    )
    assert pages == 3
    assert sorted(m["id"] for m in first) == sorted(ids)
    assert all(set(m) <= {"@odata.type", "@odata.etag", "id", "subject"} for m in first)
    assert delta_link.startswith(graph_sim.base_url)
    assert "$deltatoken=" in delta_link

    empty, delta_link, _ = run_round(graph, delta_link, headers)
    assert empty == []

    graph.patch(f"users/{graph_user}/messages/{seg(ids[0])}", json={"isRead": True})
    graph.delete(f"users/{graph_user}/messages/{seg(ids[1])}")
    graph.post(f"users/{graph_user}/messages/{seg(ids[2])}/move", json={"destinationId": "archive"})
    changes, delta_link, _ = run_round(graph, delta_link, headers)
    updated = [c for c in changes if "@removed" not in c]
    removed = [c for c in changes if "@removed" in c]
    assert [c["id"] for c in updated] == [ids[0]]
    assert set(updated[0]) <= {"@odata.type", "@odata.etag", "id", "subject"}, "$select survives in the token"
    assert sorted(c["id"] for c in removed) == sorted([ids[1], ids[2]])
    assert all(c["@removed"] == {"reason": "deleted"} for c in removed)

    archive, _, _ = run_round(graph, f"users/{graph_user}/mailFolders/archive/messages/delta", IMMUTABLE)
    assert [m["id"] for m in archive] == [ids[2]]


def test_delta_link_replay_is_tolerated(graph: httpx.Client, graph_sim: GraphSim, graph_user: str) -> None:
    """learn.microsoft.com/graph/delta-query-overview: reusing a deltaLink repeats its changes."""
    _, delta_link, _ = run_round(graph, f"users/{graph_user}/contacts/delta")
    graph_sim.seed(graph_user, contacts=[{"givenName": "New"}])
    once, _, _ = run_round(graph, delta_link)
    twice, _, _ = run_round(graph, delta_link)
    assert [c["givenName"] for c in once] == [c["givenName"] for c in twice] == ["New"]


def test_unknown_or_expired_token_is_410_sync_state_not_found(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """learn.microsoft.com/graph/delta-query-overview: an invalid token means 410 Gone with a Location
    header (the initial query), start over."""
    unknown = graph.get(f"users/{graph_user}/contacts/delta", params={"$deltatoken": "made-up"})
    assert unknown.status_code == 410
    assert unknown.json()["error"]["code"] == "syncStateNotFound"
    graph_sim.seed(graph_user, contacts=[{"givenName": f"c{i}"} for i in range(3)])
    page = graph.get(f"users/{graph_user}/contacts/delta", headers={"Prefer": "odata.maxpagesize=1"}).json()
    _, delta_link, _ = run_round(graph, page["@odata.nextLink"])
    assert graph_sim.expire_delta_tokens(graph_user) >= 1
    expired = graph.get(delta_link)
    assert expired.status_code == 410
    assert graph.get(page["@odata.nextLink"]).status_code == 410
    # "Synchronization reset": a Location header holds the initial query to start over with.
    assert expired.headers["Location"] == f"{graph_sim.base_url}/users/{graph_user}/contacts/delta"
    again, _, _ = run_round(graph, expired.headers["Location"])
    assert len(again) == 3


def test_contact_delta_per_folder(graph: httpx.Client, graph_sim: GraphSim, graph_user: str) -> None:
    """learn.microsoft.com/graph/api/contact-delta: tracks one contact folder."""
    folder = graph.post(f"users/{graph_user}/contactFolders", json={"displayName": "CRM"}).json()
    graph_sim.seed(
        graph_user, contacts=[{"givenName": "Default"}], contactFolders={folder["id"]: [{"givenName": "In"}]}
    )
    items, _, _ = run_round(graph, f"users/{graph_user}/contactFolders/{seg(folder['id'])}/contacts/delta")
    assert [c["givenName"] for c in items] == ["In"]
    assert items[0]["parentFolderId"] == folder["id"]


def test_todo_task_delta(graph: httpx.Client, graph_sim: GraphSim, graph_user: str) -> None:
    """learn.microsoft.com/graph/api/todotask-delta: changes of the tasks in one list."""
    list_id = graph_sim.user_info(graph_user)["defaultTodoList"]
    base = f"users/{graph_user}/todo/lists/{seg(list_id)}/tasks"
    task = graph.post(base, json={"title": "Call back"}).json()
    first, delta_link, _ = run_round(graph, f"{base}/delta")
    assert [t["title"] for t in first] == ["Call back"]
    graph.patch(f"{base}/{seg(task['id'])}", json={"status": "completed"})
    changed, delta_link, _ = run_round(graph, delta_link)
    assert changed[0]["status"] == "completed"
    assert changed[0]["completedDateTime"]["timeZone"] == "UTC"
    graph.delete(f"{base}/{seg(task['id'])}")
    removed, _, _ = run_round(graph, delta_link)
    assert removed == [
        {"@odata.type": "#microsoft.graph.todoTask", "id": task["id"], "@removed": {"reason": "deleted"}}
    ]


def test_calendar_view_delta_reports_items_leaving_the_window(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """learn.microsoft.com/graph/delta-query-events: the window is fixed by the first call; an event
    moved out of it comes back as @removed."""
    event = graph.post(
        f"users/{graph_user}/events",
        json={"subject": "Review", "start": {"dateTime": "2030-03-02T10:00:00", "timeZone": "UTC"},
              "end": {"dateTime": "2030-03-02T11:00:00", "timeZone": "UTC"}},
    ).json()  # fmt: skip
    window = "startDateTime=2030-03-01T00:00:00Z&endDateTime=2030-03-08T00:00:00Z"
    first, delta_link, _ = run_round(graph, f"users/{graph_user}/calendarView/delta?{window}")
    assert [e["subject"] for e in first] == ["Review"]
    assert "startDateTime" not in delta_link, "the window travels inside the opaque token"
    graph.patch(
        f"users/{graph_user}/events/{seg(event['id'])}",
        json={"start": {"dateTime": "2030-04-02T10:00:00", "timeZone": "UTC"},
              "end": {"dateTime": "2030-04-02T11:00:00", "timeZone": "UTC"}},
    )  # fmt: skip
    changes, _, _ = run_round(graph, delta_link)
    assert changes == [
        {"@odata.type": "#microsoft.graph.event", "id": event["id"], "@removed": {"reason": "deleted"}}
    ]
    missing_window = graph.get(f"users/{graph_user}/calendarView/delta")
    assert missing_window.status_code == 400


def test_expand_of_extended_properties_travels_in_the_token(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """learn.microsoft.com/graph/delta-query-overview: query options of the first call are encoded in
    the links, here $expand=singleValueExtendedProperties($filter=id eq '...') on a contact delta."""
    prop = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name CrmId"
    expand = f"singleValueExtendedProperties($filter=id eq '{prop}')"
    _, delta_link, _ = run_round(graph, f"users/{graph_user}/contacts/delta?$expand={expand}")
    graph_sim.seed(graph_user, contacts=[{"givenName": "Linked", "singleValueExtendedProperties": [
        {"id": prop, "value": "crm-7"}]}])  # fmt: skip
    [contact], _, _ = run_round(graph, delta_link)
    assert contact["singleValueExtendedProperties"] == [{"id": prop, "value": "crm-7"}]


def _seed_received(graph_sim: GraphSim, graph_user: str) -> list[str]:
    dated = [{"subject": f"m{day}", "receivedDateTime": f"2026-01-0{day}T08:00:00Z"} for day in (2, 1, 3)]
    ids: list[str] = graph_sim.seed(graph_user, messages={"inbox": dated})["messages"]["inbox"]
    return ids


def test_message_delta_change_type_limits_the_later_rounds(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """learn.microsoft.com/graph/api/message-delta, custom query option changeType (created, updated or
    deleted), given on the initial request: the later rounds report only that kind of change."""
    ids = _seed_received(graph_sim, graph_user)
    folder = f"users/{graph_user}/mailFolders/inbox/messages/delta"
    first, created_link, _ = run_round(graph, f"{folder}?changeType=created", IMMUTABLE)
    _, deleted_link, _ = run_round(graph, f"{folder}?changeType=deleted", IMMUTABLE)
    assert len(first) == 3, "the initial round is the full synchronization"
    graph.patch(f"users/{graph_user}/messages/{seg(ids[0])}", json={"isRead": True})
    graph.delete(f"users/{graph_user}/messages/{seg(ids[1])}")
    [new_id] = graph_sim.seed(graph_user, messages={"inbox": [{"subject": "new"}]})["messages"]["inbox"]
    created, _, _ = run_round(graph, created_link, IMMUTABLE)
    deleted, _, _ = run_round(graph, deleted_link, IMMUTABLE)
    assert [item["id"] for item in created] == [new_id]
    assert [(item["id"], item["@removed"]) for item in deleted] == [(ids[1], {"reason": "deleted"})]
    assert graph.get(f"{folder}?changeType=moved").status_code == 400


def test_message_delta_filters_and_orders_by_received_date(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """learn.microsoft.com/graph/api/message-delta: "$filter=receivedDateTime+ge+{value} or
    $filter=receivedDateTime+gt+{value}" and "$orderby=receivedDateTime+desc" are supported."""
    _seed_received(graph_sim, graph_user)
    folder = f"users/{graph_user}/mailFolders/inbox/messages/delta"
    since, _, _ = run_round(graph, f"{folder}?$filter=receivedDateTime ge 2026-01-02T08:00:00Z")
    after, _, _ = run_round(graph, f"{folder}?$filter=receivedDateTime gt 2026-01-02T08:00:00Z")
    newest, _, _ = run_round(graph, f"{folder}?$select=subject&$orderby=receivedDateTime desc")
    assert sorted(item["subject"] for item in since) == ["m2", "m3"]
    assert [item["subject"] for item in after] == ["m3"]
    assert [item["subject"] for item in newest] == ["m3", "m2", "m1"]
    assert graph.get(f"{folder}?$orderby=subject").status_code == 400
