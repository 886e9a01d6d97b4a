"""Security roles, column-level security and impersonation.

Docs: "Impersonate another user using the Web API"; "Column-level security"; "Security roles and
privileges"; "Troubleshoot Dataverse client errors" (missing privilege 0x80040220).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from simulators.dataverse.launcher import DataverseSimulator


def _user(
    dataverse_sim: DataverseSimulator, tables: dict[str, dict[str, str]], **extra: Any
) -> dict[str, Any]:
    role = f"role-{uuid.uuid4().hex}"
    dataverse_sim.add_role(role, tables=tables)
    return dataverse_sim.add_user(roles=[role], **extra)


def _as(user: dict[str, Any]) -> dict[str, str]:
    return {"CallerObjectId": user["azureactivedirectoryobjectid"]}


def test_impersonated_call_runs_with_the_users_privileges(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Impersonation runs as the user; a missing privilege -> 403 0x80040220 naming prvCreateContact."""
    reader = _user(dataverse_sim, {"contact": {"read": "organization"}})
    assert api.get("WhoAmI", headers=_as(reader)).json()["UserId"] == reader["systemuserid"]
    denied = api.post("contacts", json={"lastname": "No"}, headers=_as(reader))
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "0x80040220"
    assert "prvCreateContact" in denied.json()["error"]["message"]
    assert api.post("contacts", json={"lastname": "Yes"}).status_code == 204


def test_created_rows_are_owned_and_stamped_on_behalf(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Impersonation: the row is created by (and owned by) the user; createdonbehalfby is the caller."""
    writer = _user(dataverse_sim, {"contact": {"create": "user", "read": "user"}})
    created = api.post(
        "contacts?$select=_ownerid_value,_createdby_value,_createdonbehalfby_value",
        json={"lastname": "Mine"},
        headers={**_as(writer), "Prefer": "return=representation"},
    ).json()
    assert created["_ownerid_value"] == writer["systemuserid"]
    assert created["_createdby_value"] == writer["systemuserid"]
    assert created["_createdonbehalfby_value"] == dataverse_sim.app_user_id


def test_the_actual_user_is_found_by_expanding_the_audit_lookups(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Impersonate another user using the Web API, "Determine the actual user": $expand createdby,
    createdonbehalfby and owninguser (read-only single-valued navigation properties)."""
    writer = _user(
        dataverse_sim, {"contact": {"create": "user", "read": "user"}}, fullname="Impersonated User"
    )
    contact_id = (
        api.post("contacts", json={"lastname": "Mine"}, headers=_as(writer))
        .headers["OData-EntityId"]
        .rsplit("(", 1)[1][:-1]
    )
    row = api.get(
        f"contacts({contact_id})?$select=lastname,_owninguser_value&$expand=createdby($select=fullname),"
        "createdonbehalfby($select=fullname),owninguser($select=fullname)"
    ).json()
    assert row["createdby"]["systemuserid"] == writer["systemuserid"]
    assert row["createdonbehalfby"]["systemuserid"] == dataverse_sim.app_user_id
    assert row["owninguser"]["fullname"] == "Impersonated User"
    assert row["_owninguser_value"] == writer["systemuserid"]


def test_user_depth_sees_and_writes_only_own_rows(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Security roles: user (basic) depth reaches only the user's own rows."""
    tag = uuid.uuid4().hex
    user = _user(dataverse_sim, {"contact": {"create": "user", "read": "user", "write": "user"}})
    [others] = dataverse_sim.seed("contact", [{"lastname": tag}])
    api.post("contacts", json={"lastname": tag}, headers=_as(user)).raise_for_status()
    mine = api.get(f"contacts?$select=_ownerid_value&$filter=lastname eq '{tag}'", headers=_as(user)).json()[
        "value"
    ]
    assert [row["_ownerid_value"] for row in mine] == [user["systemuserid"]]
    refused = api.patch(f"contacts({others})", json={"firstname": "x"}, headers=_as(user))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "0x80048306"
    assert api.get(f"contacts({others})", headers=_as(user)).status_code == 403


def test_secured_column_reads_null_and_refuses_writes(
    private_sim: DataverseSimulator, private_api: httpx.Client
) -> None:
    """Column-level security: unreadable secured columns are null; writes need create/update permission."""
    column = "governmentid"
    reader_profile = f"fsp-{uuid.uuid4().hex}"
    private_sim.add_field_security_profile(
        reader_profile, [{"table": "contact", "column": column, "read": True}]
    )
    tables = {"contact": {"create": "organization", "read": "organization", "write": "organization"}}
    outsider = _user(private_sim, tables)
    reader = _user(private_sim, tables, fieldsecurityprofiles=[reader_profile])
    [contact_id] = private_sim.seed("contact", [{"lastname": "S", column: "123-45"}])
    assert private_api.get(f"contacts({contact_id})?$select={column}").json()[column] == "123-45"
    assert (
        private_api.get(f"contacts({contact_id})?$select={column}", headers=_as(outsider)).json()[column]
        is None
    )
    assert (
        private_api.get(f"contacts({contact_id})?$select={column}", headers=_as(reader)).json()[column]
        == "123-45"
    )
    update = private_api.patch(f"contacts({contact_id})", json={column: "999"}, headers=_as(reader))
    assert update.status_code == 403
    assert update.json()["error"]["code"] == "0x8004f507"
    create = private_api.post("contacts", json={"lastname": "T", column: "1"}, headers=_as(outsider))
    assert create.status_code == 403
    assert create.json()["error"]["code"] == "0x8004f502"
    assert (
        private_api.patch(
            f"contacts({contact_id})", json={"firstname": "ok"}, headers=_as(reader)
        ).status_code
        == 204
    )


def test_impersonation_needs_act_on_behalf_privilege(
    dataverse_sim: DataverseSimulator, dataverse_token: str, api: httpx.Client
) -> None:
    """The calling user needs prvActOnBehalfOfAnotherUser, else CannotActOnBehalfOfAnotherUser 0x8004a110."""
    plain_app = _user(dataverse_sim, {"contact": {"read": "organization"}})
    dataverse_sim.bind_token(dataverse_token, plain_app["systemuserid"])
    target = _user(dataverse_sim, {"contact": {"read": "organization"}})
    refused = api.get("contacts?$top=1", headers={"CallerObjectId": target["azureactivedirectoryobjectid"]})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "0x8004a110"
    own = api.get("WhoAmI")
    assert own.json()["UserId"] == plain_app["systemuserid"]


def test_unknown_or_disabled_caller_is_refused(dataverse_sim: DataverseSimulator, api: httpx.Client) -> None:
    """Impersonating an Entra object id of no systemuser, or a disabled user, is refused."""
    unknown = api.get("WhoAmI", headers={"CallerObjectId": str(uuid.uuid4())})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "0x80040217"
    disabled = _user(dataverse_sim, {"contact": {"read": "organization"}}, isdisabled=True)
    refused = api.get("WhoAmI", headers=_as(disabled))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "0x80040225"


def test_append_to_needs_privilege_on_the_target(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    """Security roles: setting a lookup needs Append on the row and AppendTo on the referenced row."""
    user = _user(
        dataverse_sim,
        {
            "contact": {"create": "organization", "read": "organization", "append": "organization"},
            "account": {"read": "organization"},
        },
    )
    [account_id] = dataverse_sim.seed("account", [{"name": "Locked"}])
    refused = api.post(
        "contacts",
        json={"lastname": "A", "parentcustomerid_account@odata.bind": f"/accounts({account_id})"},
        headers=_as(user),
    )
    assert refused.status_code == 403
    assert "prvAppendToAccount" in refused.json()["error"]["message"]
