"""What the CRM -> Outlook direction writes: stamps in the create POST, transactionId, meeting invitations
between the tenant's mailboxes, and linkedResources on To Do tasks."""

from __future__ import annotations

from typing import Any

import httpx

from simulators.graph.sink import NotificationSink
from tests.fixtures.graph_sim import GraphSim
from tests.graph_sim.conftest import seg, subscribe

CRM_ID = "String {8a8d3a3e-3c2f-4f0f-9a63-2a3d8d0c5b11} Name crmsync.crmId"
IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}
START = {"dateTime": "2030-03-04T09:00:00", "timeZone": "UTC"}
END = {"dateTime": "2030-03-04T10:00:00", "timeZone": "UTC"}
WINDOW = {"startDateTime": "2030-03-01T00:00:00Z", "endDateTime": "2030-03-10T00:00:00Z"}


def _stamp(value: str) -> list[dict[str, str]]:
    return [{"id": CRM_ID, "value": value}]


def _expand() -> dict[str, str]:
    return {"$expand": f"singleValueExtendedProperties($filter=id eq '{CRM_ID}')"}


def _stamped(value: str) -> dict[str, str]:
    return {
        "$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{CRM_ID}' and ep/value eq '{value}')"
    }


def _post(graph: httpx.Client, path: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    answer = graph.post(path, json=body, headers=IMMUTABLE)
    assert answer.status_code == status, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_a_stamp_written_in_the_create_post_is_stored_expanded_and_found(
    graph: httpx.Client, graph_user: str
) -> None:
    """singlevaluelegacyextendedproperty-post-singlevalueextendedproperties ("Create an extended property
    in a new resource instance": the POST of the contact, event or message carries it) and
    singlevaluelegacyextendedproperty-get ($expand with $filter=id eq, $filter with Any on id and value):
    a client can look its stamp up before creating the item again."""
    contact = _post(
        graph,
        f"users/{graph_user}/contacts",
        {"givenName": "Ada", "singleValueExtendedProperties": _stamp("c-1")},
    )
    event = _post(
        graph,
        f"users/{graph_user}/events",
        {"subject": "Review", "start": START, "end": END, "singleValueExtendedProperties": _stamp("a-1")},
    )
    message = _post(
        graph,
        f"users/{graph_user}/messages",
        {"subject": "Draft", "singleValueExtendedProperties": _stamp("m-1")},
    )
    _post(
        graph,
        f"users/{graph_user}/contacts",
        {"givenName": "Bob", "singleValueExtendedProperties": _stamp("c-2")},
    )
    for collection, item, value in (
        ("contacts", contact, "c-1"),
        ("events", event, "a-1"),
        ("messages", message, "m-1"),
    ):
        assert "singleValueExtendedProperties" not in item  # only with $expand
        got = graph.get(f"users/{graph_user}/{collection}/{seg(item['id'])}", params=_expand()).json()
        assert got["singleValueExtendedProperties"] == [{"id": CRM_ID, "value": value}]
        found = graph.get(f"users/{graph_user}/{collection}", params=_stamped(value), headers=IMMUTABLE)
        assert [i["id"] for i in found.json()["value"]] == [item["id"]]
    # "Filtering the value property of an extended property is case-insensitive"; the Name is not.
    upper = graph.get(f"users/{graph_user}/contacts", params=_stamped("C-1"), headers=IMMUTABLE).json()
    assert [c["id"] for c in upper["value"]] == [contact["id"]]
    other_name = CRM_ID.replace("crmsync.crmId", "CRMSYNC.CRMID")
    wrong_name = {
        "$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{other_name}' and ep/value eq 'c-1')"
    }
    assert graph.get(f"users/{graph_user}/contacts", params=wrong_name).json()["value"] == []
    assert graph.get(f"users/{graph_user}/contacts", params=_stamped("c-3")).json()["value"] == []


def test_a_retried_event_post_with_the_same_transaction_id_creates_nothing(
    graph: httpx.Client, graph_user: str
) -> None:
    """resources/event transactionId: "to avoid redundant POST operations in case of client retries";
    it cannot change later and is only returned when an app set it."""
    body = {"subject": "Review", "start": START, "end": END, "transactionId": "crm-appointment-7"}
    first = _post(graph, f"users/{graph_user}/events", body)
    again = _post(graph, f"users/{graph_user}/events", {**body, "subject": "Review (retry)"})
    assert again["id"] == first["id"]
    assert again["subject"] == "Review"
    assert first["transactionId"] == "crm-appointment-7"
    events = graph.get(f"users/{graph_user}/events").json()["value"]
    assert [e["subject"] for e in events] == ["Review"]
    plain = _post(graph, f"users/{graph_user}/events", {"subject": "Other", "start": START, "end": END})
    assert "transactionId" not in plain
    changed = graph.patch(f"users/{graph_user}/events/{seg(first['id'])}", json={"transactionId": "other"})
    assert changed.status_code == 400
    same = graph.patch(
        f"users/{graph_user}/events/{seg(first['id'])}",
        json={"transactionId": "crm-appointment-7", "subject": "R2"},
    )
    assert same.status_code == 200
    assert same.json()["subject"] == "R2"
    other_mailbox_is_independent = _post(
        graph, f"users/{graph_user}/events", {**body, "transactionId": "crm-appointment-8"}
    )
    assert other_mailbox_is_independent["id"] != first["id"]


def _mailbox(graph_sim: GraphSim, name: str) -> tuple[str, str]:
    user = graph_sim.add_user(display_name=name)
    return user, str(graph_sim.user_info(user)["mail"])


def _calendar(graph: httpx.Client, user: str) -> list[dict[str, Any]]:
    values: list[dict[str, Any]] = graph.get(f"users/{user}/events", headers=IMMUTABLE).json()["value"]
    return values


def test_a_meeting_invites_the_tenant_attendees_and_follows_the_organizer(
    graph: httpx.Client, graph_sim: GraphSim, graph_sink: NotificationSink
) -> None:
    """resources/eventmessage ("Outlook automatically creates an event instance in the invitee's calendar,
    with the showAs property as tentative"), resources/event (iCalUId across calendars, isOrganizer,
    isCancelled), resources/responsestatus (notResponded in the invitee's calendar), event-update and
    event-delete ("deleting the event on the organizer's calendar sends a cancellation message")."""
    organizer, organizer_mail = _mailbox(graph_sim, "Olga Organizer")
    alice, alice_mail = _mailbox(graph_sim, "Alice Attendee")
    bob, bob_mail = _mailbox(graph_sim, "Bob Attendee")
    assert subscribe(graph, graph_sink, f"users/{alice}/events").status_code == 201
    alice_delta = graph.get(f"users/{alice}/calendarView/delta", params=WINDOW).json()["@odata.deltaLink"]
    attendees = [
        {"emailAddress": {"address": alice_mail.upper(), "name": "Alice"}, "type": "required"},
        {"emailAddress": {"address": "guest@elsewhere.example", "name": "Guest"}, "type": "optional"},
    ]
    meeting = _post(
        graph,
        f"users/{organizer}/events",
        {"subject": "Kick-off", "start": START, "end": END, "attendees": attendees, "categories": ["Mine"],
         "singleValueExtendedProperties": _stamp("a-9")},
    )  # fmt: skip
    assert meeting["isOrganizer"] is True
    [invitation] = _calendar(graph, alice)
    assert invitation["iCalUId"] == meeting["iCalUId"]
    assert invitation["id"] != meeting["id"]
    assert invitation["isOrganizer"] is False
    assert invitation["responseStatus"]["response"] == "notResponded"
    assert invitation["organizer"]["emailAddress"]["address"] == organizer_mail
    assert invitation["showAs"] == "tentative"
    assert (invitation["subject"], invitation["start"], invitation["categories"]) == (
        "Kick-off",
        meeting["start"],
        [],
    )
    assert (
        "singleValueExtendedProperties"
        not in graph.get(f"users/{alice}/events/{seg(invitation['id'])}", params=_expand()).json()
    )
    assert _calendar(graph, bob) == []
    [created] = graph_sink.wait_for(1)
    assert created["changeType"] == "created"
    assert created["resourceData"]["id"] == invitation["id"]
    [seen] = graph.get(alice_delta, headers=IMMUTABLE).json()["value"]
    assert seen["id"] == invitation["id"]
    assert seen["iCalUId"] == meeting["iCalUId"]

    # The organizer's own category change is not sent; a new time and a new attendee are.
    graph.patch(f"users/{organizer}/events/{seg(meeting['id'])}", json={"categories": ["Other"]})
    assert _calendar(graph, alice)[0]["changeKey"] == invitation["changeKey"]
    moved = {"dateTime": "2030-03-05T09:00:00", "timeZone": "UTC"}
    bob_attends = {"emailAddress": {"address": bob_mail}, "type": "required"}
    update = {"start": moved, "end": {"dateTime": "2030-03-05T10:00:00", "timeZone": "UTC"},
              "attendees": [*attendees, bob_attends]}  # fmt: skip
    assert graph.patch(f"users/{organizer}/events/{seg(meeting['id'])}", json=update).status_code == 200
    [updated] = _calendar(graph, alice)
    assert updated["id"] == invitation["id"]
    assert updated["start"]["dateTime"].startswith("2030-03-05T09:00")
    [bobs] = _calendar(graph, bob)
    assert bobs["iCalUId"] == meeting["iCalUId"]
    assert bobs["isCancelled"] is False

    # Bob taken off the list gets a cancellation; deleting the meeting cancels Alice's copy.
    assert (
        graph.patch(
            f"users/{organizer}/events/{seg(meeting['id'])}", json={"attendees": attendees}
        ).status_code
        == 200
    )
    assert _calendar(graph, bob)[0]["isCancelled"] is True
    assert _calendar(graph, alice)[0]["isCancelled"] is False
    assert graph.delete(f"users/{organizer}/events/{seg(meeting['id'])}").status_code == 204
    [cancelled] = _calendar(graph, alice)
    assert cancelled["id"] == invitation["id"]
    assert cancelled["isCancelled"] is True
    kinds = [n["changeType"] for n in graph_sink.wait_for(4)]
    assert kinds == ["created", "updated", "updated", "updated"]


def test_an_invitation_is_not_sent_by_an_attendee_copy_or_a_received_meeting(
    graph: httpx.Client, graph_sim: GraphSim
) -> None:
    """Only the organizer's calendar sends (event-update); an event whose organizer is someone else is a
    received invitation (isOrganizer false) and changing it sends nothing."""
    organizer, _ = _mailbox(graph_sim, "Olga Organizer")
    alice, alice_mail = _mailbox(graph_sim, "Alice Attendee")
    bob, bob_mail = _mailbox(graph_sim, "Bob Attendee")
    received = _post(
        graph,
        f"users/{alice}/events",
        {"subject": "From outside", "start": START, "end": END,
         "organizer": {"emailAddress": {"address": "someone@elsewhere.example"}},
         "attendees": [{"emailAddress": {"address": bob_mail}, "type": "required"}]},
    )  # fmt: skip
    assert received["isOrganizer"] is False
    assert _calendar(graph, bob) == []
    _post(graph, f"users/{organizer}/events",
          {"subject": "Sync", "start": START, "end": END,
           "attendees": [{"emailAddress": {"address": alice_mail}, "type": "required"}]})  # fmt: skip
    copy = next(e for e in _calendar(graph, alice) if e["subject"] == "Sync")
    patched = graph.patch(
        f"users/{alice}/events/{seg(copy['id'])}",
        json={"attendees": [{"emailAddress": {"address": bob_mail}, "type": "required"}]},
    )
    assert patched.status_code == 200
    assert _calendar(graph, bob) == []


def test_linked_resources_on_to_do_tasks(graph: httpx.Client, graph_sim: GraphSim, graph_user: str) -> None:
    """todotasklist-post-tasks (a task created with a linkedResource, returned in the 201 answer),
    todotask-list-linkedresources, todotask-post-linkedresources (201), linkedresource-get."""
    list_id = graph_sim.user_info(graph_user)["defaultTodoList"]
    base = f"users/{graph_user}/todo/lists/{seg(list_id)}/tasks"
    web_url = "https://contoso.crm.dynamics.com/main.aspx?etn=task&id=task-guid-1&pagetype=entityrecord"
    link = {"externalId": "task-guid-1", "applicationName": "Dynamics 365", "displayName": "Call Ada",
            "webUrl": web_url}  # fmt: skip
    task = _post(graph, base, {"title": "Call Ada", "linkedResources": [link]})
    [returned] = task["linkedResources"]
    assert {k: returned[k] for k in link} == link
    assert returned["id"]
    listed = graph.get(f"{base}/{seg(task['id'])}/linkedResources").json()["value"]
    assert [(r["id"], r["externalId"]) for r in listed] == [(returned["id"], "task-guid-1")]
    extra = _post(
        graph, f"{base}/{seg(task['id'])}/linkedResources", {"applicationName": "Other", "displayName": "x"}
    )
    got = graph.get(f"{base}/{seg(task['id'])}/linkedResources/{seg(extra['id'])}").json()
    assert (got["applicationName"], got["externalId"], got["webUrl"]) == ("Other", None, None)
    assert len(graph.get(f"{base}/{seg(task['id'])}/linkedResources").json()["value"]) == 2
    assert graph.get(f"{base}/{seg(task['id'])}/linkedResources/missing").status_code == 404
    bad = graph.post(base, json={"title": "Bad", "linkedResources": [{"externalId": 5}]})
    assert bad.status_code == 400
    unknown = graph.post(base, json={"title": "Bad", "linkedResources": [{"colour": "red"}]})
    assert unknown.status_code == 400
    titles = [t["title"] for t in graph.get(base).json()["value"]]
    assert titles == ["Call Ada"]
    assert (
        graph.post(
            f"users/{graph_user}/contacts", json={"givenName": "X", "linkedResources": [link]}
        ).status_code
        == 400
    )
