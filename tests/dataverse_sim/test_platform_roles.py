"""Predefined security roles, RetrieveUserPrivileges, role association, usersettings, sync mappings.

Docs: "Security roles and privileges" (predefined roles); "RetrieveUserPrivileges Function" and
"RolePrivilege ComplexType"; "Associate and disassociate table rows using the Web API"; "Specify
time zone settings for a user"; "What fields can be synchronized with Outlook?".
"""

from __future__ import annotations

import uuid

import httpx

from simulators.dataverse.launcher import DataverseSimulator


def _as(user: dict[str, str]) -> dict[str, str]:
    return {"CallerObjectId": user["azureactivedirectoryobjectid"]}


def _privileges(api: httpx.Client, user_id: str) -> dict[str, dict[str, str]]:
    response = api.get(f"systemusers({user_id})/Microsoft.Dynamics.CRM.RetrieveUserPrivileges")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["@odata.context"].endswith("#Microsoft.Dynamics.CRM.RetrieveUserPrivilegesResponse")
    return {entry["PrivilegeName"]: entry for entry in body["RolePrivileges"]}


def test_new_organization_has_the_predefined_roles(api: httpx.Client) -> None:
    """The roles exist at start, readable through the Web API, without any /_sim call."""
    names = {row["name"] for row in api.get("roles?$select=name").json()["value"]}
    assert {"System Administrator", "Basic User", "Salesperson"} <= names


def test_retrieve_user_privileges_per_role(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """Salesperson holds prvSyncToOutlook, Basic User does not; System Administrator has organization
    (Global) depth on every table privilege; each entry has the documented RolePrivilege shape."""
    seller = dataverse_sim.add_user(roles=["Salesperson"])
    basic = dataverse_sim.add_user(roles=["Basic User"])
    admin = dataverse_sim.add_user(roles=["System Administrator"])
    seller_privileges = _privileges(api, seller["systemuserid"])
    assert "prvSyncToOutlook" in seller_privileges
    assert seller_privileges["prvCreateContact"]["Depth"] == "Basic"
    assert set(seller_privileges["prvSyncToOutlook"]) == {
        "Depth",
        "PrivilegeId",
        "BusinessUnitId",
        "PrivilegeName",
    }
    basic_privileges = _privileges(api, basic["systemuserid"])
    assert "prvSyncToOutlook" not in basic_privileges
    assert basic_privileges["prvReadContact"]["Depth"] == "Basic"
    admin_privileges = _privileges(api, admin["systemuserid"])
    for name in ("prvReadContact", "prvWriteActivity", "prvDeleteAccount", "prvSyncToOutlook"):
        assert admin_privileges[name]["Depth"] == "Global"
    ids = {entry["PrivilegeId"] for entry in admin_privileges.values()}
    listed = {row["privilegeid"] for row in api.get("privileges?$select=name").json()["value"]}
    assert ids <= listed


def test_retrieve_user_privileges_of_unknown_user_is_404(api: httpx.Client) -> None:
    missing = api.get(f"systemusers({uuid.uuid4()})/Microsoft.Dynamics.CRM.RetrieveUserPrivileges()")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "0x80040217"


def test_basic_user_reaches_only_own_records(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """Basic User works with the records it owns (user depth)."""
    first = dataverse_sim.add_user(roles=["Basic User"])
    second = dataverse_sim.add_user(roles=["Basic User"])
    created = api.post("contacts", json={"lastname": "Own"}, headers=_as(first))
    assert created.status_code == 204
    contact_path = created.headers["OData-EntityId"].rsplit("/", 1)[-1]
    assert api.get(contact_path, headers=_as(first)).status_code == 200
    denied = api.get(contact_path, headers=_as(second))
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "0x80048306"


def test_system_administrator_reads_every_secured_column(
    private_sim: DataverseSimulator, private_api: httpx.Client
) -> None:
    """Column-level security: the System Administrator role sees secured columns without a profile."""
    private_sim.add_field_security_profile(
        f"fsp-{uuid.uuid4().hex}", [{"table": "contact", "column": "governmentid", "read": True}]
    )
    admin = private_sim.add_user(roles=["System Administrator"])
    seller = private_sim.add_user(roles=["Salesperson"])
    [contact_id] = private_sim.seed(
        "contact",
        [
            {
                "lastname": "S",
                "governmentid": "123",
                "ownerid@odata.bind": f"/systemusers({seller['systemuserid']})",
            }
        ],
    )
    path = f"contacts({contact_id})?$select=governmentid"
    assert private_api.get(path, headers=_as(admin)).json()["governmentid"] == "123"
    assert private_api.get(path, headers=_as(seller)).json()["governmentid"] is None


def test_role_assigned_through_the_web_api(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """POST systemusers(<id>)/systemuserroles_association/$ref adds a role; it shows in the user's roles
    and in RetrieveUserPrivileges; a caller without prvAssignRole is refused."""
    user = dataverse_sim.add_user(roles=["Basic User"])
    roles = {row["name"]: row["roleid"] for row in api.get("roles?$select=name").json()["value"]}
    ref = {"@odata.id": f"{dataverse_sim.api_url}/roles({roles['Salesperson']})"}
    nav = f"systemusers({user['systemuserid']})/systemuserroles_association"
    refused = api.post(f"{nav}/$ref", json=ref, headers=_as(user))
    assert refused.status_code == 403
    assert "prvSyncToOutlook" not in _privileges(api, user["systemuserid"])
    assert api.post(f"{nav}/$ref", json=ref).status_code == 204
    assert {row["name"] for row in api.get(nav).json()["value"]} == {"Basic User", "Salesperson"}
    assert "prvSyncToOutlook" in _privileges(api, user["systemuserid"])


def test_usersettings_timezone_default_and_update(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Every user has a usersettings row (organization default: UTC, 92); timezonecode is writable and
    names a timezonedefinition row; an unknown code is refused."""
    user = dataverse_sim.add_user(roles=["Salesperson"])
    path = f"usersettingscollection({user['systemuserid']})"
    assert api.get(f"{path}?$select=timezonecode").json()["timezonecode"] == 92
    assert api.patch(path, json={"timezonecode": 110}).status_code == 204
    settings = api.get(f"{path}?$select=timezonecode,timezonebias").json()
    assert (settings["timezonecode"], settings["timezonebias"]) == (110, -60)
    assert api.get(f"{path}?$select=timezonecode", headers=_as(user)).json()["timezonecode"] == 110
    zones = api.get(
        "timezonedefinitions?$select=timezonecode,standardname&$filter=timezonecode eq 110"
    ).json()
    assert [z["standardname"] for z in zones["value"]] == ["W. Europe Standard Time"]
    by_name = api.get(
        "timezonedefinitions?$select=timezonecode&$filter=standardname eq 'Eastern Standard Time'"
    )
    assert [z["timezonecode"] for z in by_name.json()["value"]] == [35]
    other = dataverse_sim.add_user(roles=["Salesperson"])
    foreign = api.patch(
        f"usersettingscollection({other['systemuserid']})", json={"timezonecode": 4}, headers=_as(user)
    )
    assert foreign.status_code == 403
    assert api.patch(path, json={"timezonecode": 35}, headers=_as(user)).status_code == 204
    bad = api.patch(path, json={"timezonecode": 9999})
    assert bad.status_code == 400
    assert api.post("usersettingscollection", json={"timezonecode": 4}).status_code == 405


def test_sync_attribute_mappings_default_and_writable(private_api: httpx.Client) -> None:
    """The default field mappings are readable (0 none, 1 to Exchange, 2 to Dynamics, 3 both) and an
    administrator can change a settable one."""
    query = (
        "syncattributemappings?$select=attributecrmname,attributeexchangename,syncdirection,"
        "defaultsyncdirection,allowedsyncdirection"
    )
    rows = {row["attributecrmname"]: row for row in private_api.get(query).json()["value"]}
    assert rows["jobtitle"]["attributeexchangename"] == "Job Title"
    assert rows["jobtitle"]["syncdirection"] == 3
    assert rows["jobtitle"]["allowedsyncdirection"] == 3
    assert rows["parentcustomerid"]["allowedsyncdirection"] == 0
    # As in Dataverse, a row names no table; the bound function gives its object type code.
    assert private_api.get("syncattributemappings?$select=entityname").status_code == 400
    who = private_api.get("WhoAmI").json()["UserId"]
    function = f"systemusers({who})/Microsoft.Dynamics.CRM.RetrievePrincipalSyncAttributeMappings()"
    mappings = private_api.get(function).json()["AttributeMappings"]
    by_code: dict[int, set[str]] = {}
    for mapping in mappings:
        by_code.setdefault(mapping["EntityTypeCode"], set()).add(mapping["AttributeCrmName"])
    assert "jobtitle" in by_code[2]  # contact
    assert by_code[4201] >= {"subject", "location", "description"}  # appointment
    assert by_code[4212] >= {"percentcomplete", "scheduledend", "subject"}  # task
    (time,) = [m for m in mappings if m["EntityTypeCode"] == 4201 and m["IsComputed"]][:1]
    assert isinstance(time["ComputedProperties"], list)
    mapping_id = rows["jobtitle"]["syncattributemappingid"]
    assert (
        private_api.patch(f"syncattributemappings({mapping_id})", json={"syncdirection": 2}).status_code
        == 204
    )
    changed = private_api.get(
        f"syncattributemappings({mapping_id})?$select=syncdirection,defaultsyncdirection"
    )
    assert changed.json()["syncdirection"] == 2
    assert changed.json()["defaultsyncdirection"] == 3
    refused = private_api.patch(f"syncattributemappings({mapping_id})", json={"syncdirection": 7})
    assert refused.status_code == 400
    assert (
        private_api.patch(f"syncattributemappings({mapping_id})", json={"syncdirection": 3}).status_code
        == 204
    )
    fixed_id = rows["parentcustomerid"]["syncattributemappingid"]
    fixed = private_api.patch(f"syncattributemappings({fixed_id})", json={"syncdirection": 1})
    assert fixed.status_code == 400
