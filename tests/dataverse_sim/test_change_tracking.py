"""Change tracking ("Use change tracking to synchronize data with external systems")."""

from __future__ import annotations

import uuid

import httpx

from simulators.dataverse.launcher import DataverseSimulator

TRACK = {"Prefer": "odata.track-changes"}


def _initial_delta_link(api: httpx.Client, table: str = "contacts", select: str = "lastname") -> str:
    response = api.get(f"{table}?$select={select}", headers=TRACK)
    assert response.status_code == 200, response.text
    assert "odata.track-changes" in response.headers["Preference-Applied"]
    body = response.json()
    assert "@odata.nextLink" not in body
    link: str = body["@odata.deltaLink"]
    assert "$deltatoken=" in link
    return link


def test_delta_link_returns_changed_and_deleted_rows(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """The delta returns rows changed since the token and $deletedEntity rows for deleted ones."""
    [kept, removed] = dataverse_sim.seed("contact", [{"lastname": "Kept"}, {"lastname": "Removed"}])
    link = _initial_delta_link(api)
    api.patch(f"contacts({kept})", json={"lastname": "Kept2"}).raise_for_status()
    created = api.post(
        "contacts", json={"lastname": "New"}, headers={"Prefer": "return=representation"}
    ).json()["contactid"]
    api.delete(f"contacts({removed})").raise_for_status()
    delta = api.get(link)
    assert delta.status_code == 200
    body = delta.json()
    assert body["@odata.context"].endswith("/$delta")
    by_id = {row.get("contactid") or row.get("id"): row for row in body["value"]}
    assert by_id[kept]["lastname"] == "Kept2"
    assert by_id[created]["lastname"] == "New"
    assert by_id[removed] == {
        "@odata.context": f"{dataverse_sim.api_url}/$metadata#contacts/$deletedEntity",
        "id": removed,
        "reason": "deleted",
    }
    assert set(by_id[kept]) == {"@odata.etag", "lastname", "contactid"}
    follow_up = api.get(body["@odata.deltaLink"]).json()
    assert follow_up["value"] == []


def test_initial_sync_pages_and_ends_with_delta_link(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Change tracking honours odata.maxpagesize; only the last page carries @odata.deltaLink."""
    dataverse_sim.seed("task", [{"subject": f"t{i}"} for i in range(3)])
    first = api.get(
        "tasks?$select=subject", headers={"Prefer": "odata.track-changes,odata.maxpagesize=2"}
    ).json()
    link = first.get("@odata.nextLink")
    assert link is not None
    assert "@odata.deltaLink" not in first
    last = first
    while "@odata.nextLink" in last:
        last = api.get(
            last["@odata.nextLink"], headers={"Prefer": "odata.track-changes,odata.maxpagesize=2"}
        ).json()
    assert "$deltatoken=" in last["@odata.deltaLink"]


def test_expired_token_is_the_documented_error(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """An expired delta token -> ExpiredVersionStamp 0x80044352 "... Please perform a full sync."."""
    link = _initial_delta_link(api, "leads", "lastname")
    dataverse_sim.expire_change_tokens("lead")
    expired = api.get(link)
    assert expired.status_code == 400
    assert expired.json()["error"]["code"] == "0x80044352"
    fresh = _initial_delta_link(api, "leads", "lastname")
    assert api.get(fresh).status_code == 200


def test_filter_is_not_allowed_with_change_tracking(api: httpx.Client) -> None:
    """$filter can't be combined with change tracking; activityparty isn't change-tracked."""
    refused = api.get(f"contacts?$select=lastname&$filter=lastname eq '{uuid.uuid4()}'", headers=TRACK)
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == (
        'The "$filter" query parameter isn\'t supported when Change Tracking is enabled.'
    )
    untracked = api.get("activityparties?$select=addressused", headers=TRACK)
    assert untracked.status_code == 400
    assert untracked.json()["error"]["code"] == "0x80072491"


def test_delta_pages_by_maxpagesize_then_ends_with_a_delta_link(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """A delta larger than odata.maxpagesize pages with @odata.nextLink; the last page has the deltaLink."""
    link = _initial_delta_link(api, "accounts", "name")
    names = {f"acct {uuid.uuid4()}" for _ in range(5)}
    dataverse_sim.seed("account", [{"name": name} for name in names])
    prefer = {"Prefer": "odata.track-changes,odata.maxpagesize=2"}
    seen: set[str] = set()
    pages = 0
    url: str | None = link
    while url:
        body = api.get(url, headers=prefer).json()
        seen |= {row["name"] for row in body["value"]}
        pages += 1
        url = body.get("@odata.nextLink")
        if url is None:
            assert "$deltatoken=" in body["@odata.deltaLink"]
    assert pages == 3
    assert seen == names


def test_orderby_expand_and_top_are_not_allowed_with_change_tracking(api: httpx.Client) -> None:
    """ "Query options not supported in Change Tracking Web API request": $filter, $orderby, $expand
    and $top, each answered "The "<option>" query parameter isn't supported when Change Tracking is
    enabled."."""
    for option, value in (("$orderby", "lastname"), ("$expand", "ownerid($select=fullname)"), ("$top", "1")):
        refused = api.get("contacts", params={"$select": "lastname", option: value}, headers=TRACK)
        assert refused.status_code == 400, option
        assert refused.json()["error"]["message"] == (
            f'The "{option}" query parameter isn\'t supported when Change Tracking is enabled.'
        )


def test_count_of_the_changes_since_a_delta_token(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """ "Retrieve count of the changes made in tables": ``<entityset>/$count?$deltatoken=<token>``
    answers the number of rows changed or deleted since the token."""
    [first, second] = dataverse_sim.seed("contact", [{"lastname": "One"}, {"lastname": "Two"}])
    token = _initial_delta_link(api).split("$deltatoken=", 1)[1]
    assert api.get(f"contacts/$count?$deltatoken={token}").text == "0"
    api.patch(f"contacts({first})", json={"lastname": "One again"}).raise_for_status()
    api.patch(f"contacts({first})", json={"lastname": "One more"}).raise_for_status()
    api.delete(f"contacts({second})").raise_for_status()
    counted = api.get(f"contacts/$count?$deltatoken={token}")
    assert counted.status_code == 200
    assert counted.text == "2"
