"""Field security profiles as Web API rows ("Column-level security with code"): fieldpermissions of the
System Administrator profile list every secured column; a user's profiles through
systemuserprofiles_association; the rows are read-only."""

from __future__ import annotations

import uuid

import httpx

from simulators.dataverse.launcher import DataverseSimulator

ADMIN_PROFILE = "572329c1-a042-4e22-be47-367c6374ea45"


def test_profiles_permissions_and_a_users_profiles(
    dataverse_sim: DataverseSimulator, api: httpx.Client
) -> None:
    name = f"jobs {uuid.uuid4().hex[:8]}"
    dataverse_sim.add_field_security_profile(
        name, [{"table": "contact", "column": "governmentid", "read": True, "update": False, "create": False}]
    )
    reader = dataverse_sim.add_user(roles=["Salesperson"], fieldsecurityprofiles=[name])
    admin = dataverse_sim.add_user(roles=["System Administrator"])
    rows = api.get(
        "fieldpermissions?$select=entityname,attributelogicalname,canread,canupdate,cancreate,"
        "_fieldsecurityprofileid_value&$filter=entityname eq 'contact'"
    ).json()["value"]
    admin_rows = {
        r["attributelogicalname"]: r for r in rows if r["_fieldsecurityprofileid_value"] == ADMIN_PROFILE
    }
    assert (admin_rows["governmentid"]["canread"], admin_rows["governmentid"]["canupdate"]) == (4, 4)
    profiles = api.get(f"systemusers({reader['systemuserid']})/systemuserprofiles_association").json()[
        "value"
    ]
    assert [p["name"] for p in profiles] == [name]
    mine = [r for r in rows if r["_fieldsecurityprofileid_value"] == profiles[0]["fieldsecurityprofileid"]]
    assert [(r["attributelogicalname"], r["canread"], r["canupdate"]) for r in mine] == [
        ("governmentid", 4, 0)
    ]
    admin_profiles = api.get(
        f"systemusers({admin['systemuserid']})/systemuserprofiles_association?$select=fieldsecurityprofileid"
    ).json()["value"]
    assert [p["fieldsecurityprofileid"] for p in admin_profiles] == [ADMIN_PROFILE]
    refused = api.patch(f"fieldpermissions({mine[0]['fieldpermissionid']})", json={"canupdate": 4})
    assert refused.status_code == 405
