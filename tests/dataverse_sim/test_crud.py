"""Create / retrieve / update / delete, each following a named Microsoft doc page."""

from __future__ import annotations

import uuid

import httpx

from simulators.dataverse.launcher import DataverseSimulator


def _new_contact(api: httpx.Client, **columns: object) -> str:
    response = api.post("contacts", json={"lastname": f"L{uuid.uuid4().hex[:8]}", **columns})
    assert response.status_code == 204, response.text
    entity_id = response.headers["OData-EntityId"]
    return entity_id[entity_id.index("(") + 1 : -1]


def test_missing_bearer_is_401(api: httpx.Client) -> None:
    """Use the Dataverse Web API: every request carries an OAuth bearer token."""
    assert api.get("contacts", headers={"Authorization": ""}).status_code == 401
    assert api.get("contacts", headers={"Authorization": "Basic abc"}).status_code == 401


def test_create_answers_204_with_entity_id_and_201_with_representation(api: httpx.Client) -> None:
    """Create a table row using the Web API: 204 + OData-EntityId; return=representation -> 201."""
    contact_id = _new_contact(api, firstname="Ann")
    created = api.post(
        "contacts?$select=fullname",
        json={"firstname": "Bo", "lastname": "Ek"},
        headers={"Prefer": "return=representation"},
    )
    assert created.status_code == 201
    assert created.json()["fullname"] == "Bo Ek"
    assert created.json()["@odata.etag"].startswith('W/"')
    fetched = api.get(f"contacts({contact_id})?$select=firstname,statecode,statuscode")
    assert fetched.status_code == 200
    assert fetched.json()["firstname"] == "Ann"
    assert (fetched.json()["statecode"], fetched.json()["statuscode"]) == (0, 1)


def test_client_chosen_duplicate_id_is_refused(api: httpx.Client) -> None:
    """Troubleshoot Dataverse client errors: "Cannot insert duplicate key" 0x80040237."""
    contact_id = str(uuid.uuid4())
    assert api.post("contacts", json={"contactid": contact_id, "lastname": "A"}).status_code == 204
    again = api.post("contacts", json={"contactid": contact_id, "lastname": "B"})
    assert again.status_code == 412
    assert again.json()["error"]["code"] == "0x80040237"


def test_too_long_string_and_unknown_column_are_400(api: httpx.Client) -> None:
    """contact.md: firstname max length 50 -> 0x80044331; an undeclared property -> 400."""
    too_long = api.post("contacts", json={"firstname": "x" * 51})
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "0x80044331"
    assert "'50'" in too_long.json()["error"]["message"]
    assert api.post("contacts", json={"firstname": "x" * 50}).status_code == 204
    unknown = api.post("contacts", json={"nosuchcolumn": 1})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "0x80048d19"


def test_update_and_delete(api: httpx.Client) -> None:
    """Update and delete table rows using the Web API: 204; a deleted row is then 404 0x80040217."""
    contact_id = _new_contact(api, firstname="Cy")
    assert api.patch(f"contacts({contact_id})", json={"jobtitle": "CFO"}).status_code == 204
    assert api.get(f"contacts({contact_id})?$select=jobtitle").json()["jobtitle"] == "CFO"
    assert api.delete(f"contacts({contact_id})").status_code == 204
    gone = api.get(f"contacts({contact_id})")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "0x80040217"
    assert api.delete(f"contacts({contact_id})").status_code == 404


def test_users_control_endpoint_creates_a_systemuser(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """The control API adds a CRM user; the Web API then finds it by its Entra object id."""
    object_id = str(uuid.uuid4())
    user = dataverse_sim.add_user(azureactivedirectoryobjectid=object_id, fullname="Dee Fox")
    found = api.get(
        f"systemusers?$select=fullname,systemuserid&$filter=azureactivedirectoryobjectid eq {object_id}"
    ).json()["value"]
    assert [(u["systemuserid"], u["fullname"]) for u in found] == [(user["systemuserid"], "Dee Fox")]


def test_extra_tables_have_their_documented_lengths(api: httpx.Client) -> None:
    """account.md: name is a String of max length 160; lead.md: subject 300."""
    assert api.post("accounts", json={"name": "n" * 160}).status_code == 204
    too_long = api.post("accounts", json={"name": "n" * 161})
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "0x80044331"
    assert api.post("leads", json={"lastname": "L", "subject": "s" * 301}).status_code == 400


def test_owner_is_bound_to_a_systemuser(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """contact.md OwnerId (Owner: systemuser, team) is set with ownerid@odata.bind: /systemusers(<id>)."""
    user = dataverse_sim.add_user(roles=[])
    created = api.post(
        "contacts?$select=_ownerid_value",
        json={"lastname": "Owned", "ownerid@odata.bind": f"/systemusers({user['systemuserid']})"},
        headers={"Prefer": "return=representation"},
    ).json()
    assert created["_ownerid_value"] == user["systemuserid"]
    default_owner = api.post(
        "contacts?$select=_ownerid_value",
        json={"lastname": "Mine"},
        headers={"Prefer": "return=representation"},
    ).json()
    assert default_owner["_ownerid_value"] == dataverse_sim.app_user_id


def test_a_path_naming_no_entity_set_is_404_resource_not_found(api: httpx.Client) -> None:
    """A segment that names no entity set is 404 0x80060888 "Resource not found for the segment",
    not a missing row (0x80040217): a client must not read it as "no such record"."""
    for path in ("contactz", "contactz(00000000-0000-0000-0000-000000000001)", "contactz/$count"):
        answer = api.get(path)
        assert answer.status_code == 404
        assert answer.json()["error"] == {
            "code": "0x80060888",
            "message": f"Resource not found for the segment '{path.split('/')[0].split('(')[0]}'.",
        }


def test_a_single_property_or_navigation_property_value(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Retrieve a table row using the Web API: "Retrieve a single property value" answers
    ``{"@odata.context", "value"}`` (a null one 204), "Retrieve navigation property values" the
    related row with its own $select."""
    [account_id] = dataverse_sim.seed("account", [{"name": "Adventure Works"}])
    [contact_id] = dataverse_sim.seed(
        "contact", [{"lastname": "Valdes", "parentcustomerid_account@odata.bind": f"/accounts({account_id})"}]
    )
    value = api.get(f"contacts({contact_id})/lastname").json()
    assert value == {
        "@odata.context": f"{dataverse_sim.api_url}/$metadata#contacts({contact_id})/lastname",
        "value": "Valdes",
    }
    assert api.get(f"contacts({contact_id})/firstname").status_code == 204
    account = api.get(f"contacts({contact_id})/parentcustomerid_account?$select=name").json()
    assert (account["name"], account["accountid"]) == ("Adventure Works", account_id)
    assert account["@odata.context"].endswith("$metadata#accounts/$entity")
    assert api.get(f"contacts({contact_id})/nosuchcolumn").status_code == 400
