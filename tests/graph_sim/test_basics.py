"""Users, auth, errors, ids, paging and contacts CRUD, each against the doc it follows."""

from __future__ import annotations

import httpx

from tests.fixtures.graph_sim import GraphSim
from tests.graph_sim.conftest import seg


def test_missing_bearer_token_is_401(graph_sim: GraphSim, graph_user: str) -> None:
    """learn.microsoft.com/graph/auth/auth-concepts: every request carries an access token."""
    answer = httpx.get(f"{graph_sim.base_url}/users/{graph_user}", trust_env=False)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_user_by_id_and_by_user_principal_name(graph: httpx.Client, graph_sim: GraphSim) -> None:
    """learn.microsoft.com/graph/api/user-get: GET /users/{id | userPrincipalName}."""
    user_id = graph_sim.add_user(upn="Ann.Lee@contoso.test", display_name="Ann Lee")
    by_id = graph.get(f"users/{user_id}").json()
    by_upn = graph.get("users/ann.lee@contoso.test").json()
    assert by_id["id"] == by_upn["id"] == user_id
    assert by_id["userPrincipalName"] == "Ann.Lee@contoso.test"
    assert by_id["@odata.context"].endswith("$metadata#users/$entity")


def test_errors_have_graph_shape(graph: httpx.Client) -> None:
    """learn.microsoft.com/graph/errors: {"error": {"code", "message", "innerError"}}."""
    answer = graph.get("users/nobody-here")
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error["code"] == "Request_ResourceNotFound"
    assert error["message"]
    assert {"date", "request-id", "client-request-id"} <= set(error["innerError"])
    sent = graph.get(
        "users/nobody-here", headers={"client-request-id": "7b0c1d2e-0000-4000-8000-000000000001"}
    )
    assert sent.json()["error"]["innerError"]["client-request-id"] == "7b0c1d2e-0000-4000-8000-000000000001"
    assert sent.headers["client-request-id"] == "7b0c1d2e-0000-4000-8000-000000000001"


def test_an_unknown_users_mailbox_is_404_error_invalid_user(graph: httpx.Client) -> None:
    """The directory answers an unknown user Request_ResourceNotFound; a path into an unknown user's
    mailbox is Exchange's 404 ErrorInvalidUser "The requested user '<id>' is invalid."."""
    for path in (
        "users/nobody@contoso.test/messages",
        "users/nobody@contoso.test/mailFolders/inbox/messages/delta",
    ):
        answer = graph.get(path)
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "ErrorInvalidUser"
        assert answer.json()["error"]["message"] == "The requested user 'nobody@contoso.test' is invalid."


def test_contact_crud_with_awkward_ids(graph: httpx.Client, graph_user: str) -> None:
    """learn.microsoft.com/graph/api/user-post-contacts, contact-get, contact-update, contact-delete."""
    created = graph.post(
        f"users/{graph_user}/contacts",
        json={"givenName": "Pavel", "surname": "Bansky", "emailAddresses": [{"address": "p@fabrikam.test"}]},
    )
    assert created.status_code == 201
    contact = created.json()
    contact_id = contact["id"]
    assert {"/", "+", "="} <= set(contact_id), "ids must exercise URL/key encoding"
    assert contact["displayName"] == "Pavel Bansky"
    assert contact["createdDateTime"].endswith("Z")
    assert contact["@odata.etag"] == f'W/"{contact["changeKey"]}"'

    fetched = graph.get(f"users/{graph_user}/contacts/{seg(contact_id)}").json()
    assert fetched["emailAddresses"] == [{"address": "p@fabrikam.test"}]

    updated = graph.patch(f"users/{graph_user}/contacts/{seg(contact_id)}", json={"jobTitle": "Buyer"}).json()
    assert updated["jobTitle"] == "Buyer"
    assert updated["changeKey"] != contact["changeKey"]

    assert graph.delete(f"users/{graph_user}/contacts/{seg(contact_id)}").status_code == 204
    gone = graph.get(f"users/{graph_user}/contacts/{seg(contact_id)}")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "ErrorItemNotFound"


def test_a_write_with_a_stale_if_match_is_412(graph: httpx.Client, graph_user: str) -> None:
    """learn.microsoft.com/graph/errors, 412: an If-Match that is not the item's current etag fails
    with Exchange's ErrorIrresolvableConflict; the current etag or ``*`` lets the write through."""
    contact = graph.post(f"users/{graph_user}/contacts", json={"givenName": "Old"}).json()
    path = f"users/{graph_user}/contacts/{seg(contact['id'])}"
    first = {"If-Match": contact["@odata.etag"]}
    current = graph.patch(path, json={"givenName": "New"}, headers=first).json()
    stale = graph.patch(path, json={"givenName": "Lost"}, headers=first)
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "ErrorIrresolvableConflict"
    assert graph.delete(path, headers=first).status_code == 412
    assert graph.get(path).json()["givenName"] == "New"
    assert graph.patch(path, json={"givenName": "Any"}, headers={"If-Match": "*"}).status_code == 200
    assert graph.delete(path, headers={"If-Match": current["@odata.etag"]}).status_code == 412
    latest = graph.get(path).json()["@odata.etag"]
    assert graph.delete(path, headers={"If-Match": latest}).status_code == 204


def test_unknown_property_is_rejected(graph: httpx.Client, graph_user: str) -> None:
    """learn.microsoft.com/graph/errors: a body with a property the type lacks is a 400."""
    answer = graph.post(f"users/{graph_user}/contacts", json={"givenName": "A", "favouriteColour": "red"})
    assert answer.status_code == 400
    assert graph.get(f"users/{graph_user}/contacts").json()["value"] == []


def test_collections_page_with_absolute_next_links(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """learn.microsoft.com/graph/paging: @odata.nextLink is an absolute URL used as is."""
    graph_sim.seed(graph_user, contacts=[{"givenName": f"C{i}"} for i in range(23)])
    names: list[str] = []
    url: str | None = f"users/{graph_user}/contacts?$top=10&$select=givenName"
    pages = 0
    while url:
        page = graph.get(url).json()
        names.extend(c["givenName"] for c in page["value"])
        assert all(set(c) <= {"@odata.etag", "id", "givenName"} for c in page["value"])
        url = page.get("@odata.nextLink")
        assert url is None or url.startswith(graph_sim.base_url)
        pages += 1
    assert pages == 3
    assert sorted(names) == sorted(f"C{i}" for i in range(23))


def test_orderby_a_property_select_leaves_out(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """learn.microsoft.com/graph/query-parameters: $orderby sorts by a property whether or not $select
    returns it (e.g. messages by receivedDateTime with only their subjects)."""
    dated = [{"subject": f"m{day}", "receivedDateTime": f"2026-01-0{day}T08:00:00Z"} for day in (2, 1, 3)]
    graph_sim.seed(graph_user, messages={"inbox": dated})
    page = graph.get(
        f"users/{graph_user}/messages",
        params={"$select": "subject", "$orderby": "receivedDateTime desc", "$filter": "isRead eq false"},
    ).json()
    assert [row["subject"] for row in page["value"]] == ["m3", "m2", "m1"]
    assert "receivedDateTime" not in page["value"][0]


def test_filter_with_ne(graph: httpx.Client, graph_sim: GraphSim, graph_user: str) -> None:
    """learn.microsoft.com/graph/filter-query-parameter: ``ne`` (not equals) next to ``eq``."""
    graph_sim.seed(graph_user, contacts=[{"givenName": n, "surname": "S"} for n in ("Bea", "Cid", "Al")])
    others = graph.get(
        f"users/{graph_user}/contacts", params={"$filter": "givenName ne 'bea' and surname eq 'S'"}
    )
    assert sorted(c["givenName"] for c in others.json()["value"]) == ["Al", "Cid"]


def test_request_log_records_method_path_query_select_and_user(
    graph: httpx.Client, graph_sim: GraphSim, graph_user: str
) -> None:
    """The control API's request log (simulators/graph/README.md) reflects what the client sent."""
    graph.get(f"users/{graph_user}/contacts", params={"$select": "givenName,surname"})
    entries = graph_sim.requests(user=graph_user)
    assert entries[-1]["method"] == "GET"
    assert entries[-1]["path"] == f"/users/{graph_user}/contacts"
    assert entries[-1]["select"] == ["givenName", "surname"]
    assert entries[-1]["status"] == 200
    graph_sim.clear_requests(user=graph_user)
    assert graph_sim.requests(user=graph_user) == []


def test_orderby_sorts_collections(graph: httpx.Client, graph_sim: GraphSim, graph_user: str) -> None:
    """learn.microsoft.com/graph/query-parameters ($orderby, asc by default, desc on request)."""
    graph_sim.seed(graph_user, contacts=[{"givenName": n} for n in ("Bea", "Cid", "Al")])
    ascending = graph.get(f"users/{graph_user}/contacts", params={"$orderby": "givenName"}).json()["value"]
    descending = graph.get(f"users/{graph_user}/contacts", params={"$orderby": "givenName desc"}).json()[
        "value"
    ]
    assert [c["givenName"] for c in ascending] == ["Al", "Bea", "Cid"]
    assert [c["givenName"] for c in descending] == ["Cid", "Bea", "Al"]
    assert (
        graph.get(f"users/{graph_user}/contacts", params={"$orderby": "givenName sideways"}).status_code
        == 400
    )


def test_wrongly_shaped_body_is_400(graph: httpx.Client, graph_user: str) -> None:
    """learn.microsoft.com/graph/errors: 400 Bad Request for a malformed request body."""
    answer = graph.post(f"users/{graph_user}/events", json={"subject": "x", "start": "tomorrow", "end": 5})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] in {"BadRequest", "ErrorInvalidRequest"}
    not_json = graph.post(
        f"users/{graph_user}/contacts", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 400


def test_filters_on_collections_and_users(graph: httpx.Client, graph_sim: GraphSim, graph_user: str) -> None:
    """learn.microsoft.com/graph/query-parameters (filter with any on collections, eq on strings,
    case-insensitive as in Exchange) and user-list ($filter on mail)."""
    graph_sim.seed(
        graph_user,
        contacts=[
            {"givenName": "Ann", "emailAddresses": [{"address": "Ann@Fabrikam.test"}], "categories": ["VIP"]},
            {"givenName": "Bo", "emailAddresses": [{"address": "bo@fabrikam.test"}]},
        ],
    )
    by_address = graph.get(
        f"users/{graph_user}/contacts",
        params={"$filter": "emailAddresses/any(a: a/address eq 'ann@fabrikam.test')"},
    ).json()["value"]
    assert [c["givenName"] for c in by_address] == ["Ann"]
    by_category = graph.get(
        f"users/{graph_user}/contacts", params={"$filter": "categories/any(c: c eq 'vip')"}
    ).json()["value"]
    assert [c["givenName"] for c in by_category] == ["Ann"]
    mail = graph_sim.user_info(graph_user)["mail"]
    users = graph.get("users", params={"$filter": f"mail eq '{mail}'"}).json()["value"]
    assert [u["id"] for u in users] == [graph_user]
