"""Every simulated response shape checked against Microsoft's Graph v1.0 OpenAPI slice.

Stoplight Prism (the ``graph_prism`` fixture) proxies the calls to the simulator and reports any
request or response that breaks the Graph v1.0 slice (contracts/graph/README.md, "Using it").
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from tests.fixtures.graph_sim import GraphSim

STAMP = "String {8a8d3a3e-3c2f-4f0f-9a63-2a3d8d0c5b11} Name crmsync.crmId"
WINDOW = "startDateTime=2030-01-01T00:00:00Z&endDateTime=2030-02-01T00:00:00Z"


def _seeded(graph_sim: GraphSim) -> tuple[str, dict[str, str]]:
    user = graph_sim.add_user()
    seeded = graph_sim.seed(
        user,
        messages={"inbox": [{"subject": "s", "from": {"emailAddress": {"address": "a@b.test", "name": "A"}},
                             "toRecipients": [{"emailAddress": {"address": "c@d.test"}}]}]},
        contacts=[{"givenName": "G", "emailAddresses": [{"address": "g@h.test", "name": "G"}]}],
        events=[{"subject": "E", "start": {"dateTime": "2030-01-07T09:00:00", "timeZone": "UTC"},
                 "end": {"dateTime": "2030-01-07T10:00:00", "timeZone": "UTC"},
                 "recurrence": {"pattern": {"type": "daily", "interval": 1},
                                "range": {"type": "numbered", "startDate": "2030-01-07",
                                          "numberOfOccurrences": 2}},
                 "attendees": [{"emailAddress": {"address": "x@y.test"}, "type": "required"}]},
                {"subject": "single", "start": {"dateTime": "2030-01-08T09:00:00", "timeZone": "UTC"},
                 "end": {"dateTime": "2030-01-08T10:00:00", "timeZone": "UTC"}}],
        todo={"defaultList": [{"title": "T",
                               "dueDateTime": {"dateTime": "2030-01-01T00:00:00", "timeZone": "UTC"}}]},
    )  # fmt: skip
    info = graph_sim.user_info(user)
    ids = {
        "m": seeded["messages"]["inbox"][0],
        "c": seeded["contacts"][0],
        "e": seeded["events"][0],
        "t": seeded["todo"]["defaultList"][0],
        "l": info["defaultTodoList"],
    }
    return user, {k: quote(v, safe="") for k, v in ids.items()}


def test_responses_match_the_graph_contract(graph_prism: str, graph_sim: GraphSim) -> None:
    """Shapes follow Microsoft's OpenAPI description of Graph v1.0 (contracts/graph/README.md)."""
    user, ids = _seeded(graph_sim)
    u = f"/users/{user}"
    invitee = graph_sim.add_user()
    invitee_mail = graph_sim.user_info(invitee)["mail"]
    calls: list[tuple[str, str, Any]] = [
        ("GET", u, None),
        ("GET", f"{u}/mailFolders", None),
        ("GET", f"{u}/mailFolders/inbox", None),
        ("POST", f"{u}/mailFolders/inbox/childFolders", {"displayName": "CRM"}),
        ("GET", f"{u}/messages/{ids['m']}", None),
        ("PATCH", f"{u}/messages/{ids['m']}", {"categories": ["Tracked"]}),
        ("GET", f"{u}/mailFolders/inbox/messages", None),
        ("GET", f"{u}/mailFolders/inbox/messages/delta?$select=subject,from", None),
        ("POST", f"{u}/messages", {"subject": "draft"}),
        ("POST", f"{u}/messages/{ids['m']}/attachments",
         {"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.txt", "contentBytes": "aGVsbG8="}),
        ("GET", f"{u}/messages/{ids['m']}/attachments", None),
        ("GET", f"{u}/contacts/{ids['c']}", None),
        ("GET", f"{u}/contacts/delta", None),
        ("POST", f"{u}/contacts", {"givenName": "N", "businessPhones": ["+1 555"]}),
        ("POST", f"{u}/contactFolders", {"displayName": "F"}),
        ("GET", f"{u}/contactFolders", None),
        ("GET", f"{u}/events", None),
        ("GET", f"{u}/events/{ids['e']}", None),
        ("GET", f"{u}/events/{ids['e']}/instances?{WINDOW}", None),
        ("GET", f"{u}/calendarView?{WINDOW}", None),
        ("GET", f"{u}/calendarView/delta?{WINDOW}", None),
        ("GET", f"{u}/todo/lists", None),
        ("GET", f"{u}/todo/lists/{ids['l']}/tasks/{ids['t']}", None),
        ("GET", f"{u}/todo/lists/{ids['l']}/tasks/delta", None),
        ("POST", f"{u}/outlook/masterCategories", {"displayName": "C", "color": "preset1"}),
        ("GET", f"{u}/outlook/masterCategories", None),
        ("GET", "/subscriptions", None),
        ("GET", f"{u}/contacts/{ids['c']}x", None),
        # CRM -> Outlook writes: a stamp and a transactionId in the event POST, a linkedResource in the
        # task POST, and the invitation a tenant attendee receives (isOrganizer false, notResponded).
        ("POST", f"{u}/events", {"subject": "M", "transactionId": "t-1",
                                 "start": {"dateTime": "2030-01-09T09:00:00", "timeZone": "UTC"},
                                 "end": {"dateTime": "2030-01-09T10:00:00", "timeZone": "UTC"},
                                 "attendees": [{"emailAddress": {"address": invitee_mail}}],
                                 "singleValueExtendedProperties": [{"id": STAMP, "value": "crm-1"}]}),
        ("GET", f"/users/{invitee}/events", None),
        ("GET", f"{u}/events?$filter=singleValueExtendedProperties/Any(ep: ep/id eq '{STAMP}' and "
                "ep/value eq 'crm-1')&$expand=singleValueExtendedProperties($filter=id eq '{STAMP}')", None),
        ("POST", f"{u}/todo/lists/{ids['l']}/tasks",
         {"title": "L", "linkedResources": [{"applicationName": "Dynamics 365", "externalId": "x",
                                             "displayName": "L", "webUrl": "https://crm.example/x"}]}),
    ]  # fmt: skip
    violations: list[str] = []
    with httpx.Client(base_url=graph_prism, headers=graph_sim.headers, timeout=20, trust_env=False) as client:
        for method, path, body in calls:
            answer = client.request(method, path, json=body, headers={"Prefer": "odata.maxpagesize=1"})
            if answer.headers.get("sl-violations"):
                violations.append(f"{method} {path}: {answer.headers['sl-violations']}")
            assert answer.status_code < 500, f"{method} {path}: {answer.text}"
    assert violations == []
