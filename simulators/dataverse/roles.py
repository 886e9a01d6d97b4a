"""The security roles every new organization has, privilege rows and RetrieveUserPrivileges.

- Predefined roles ("Security roles and privileges", learn.microsoft.com/power-platform/admin/
  security-roles-privileges, "Predefined security roles"): **System Administrator** has full
  permission on every table at organization depth and sees every secured column ("Column-level
  security": the System Administrator role always has access); **Basic User** "primarily contains
  Basic privileges for core entities where the user can write, update, and delete records that they
  created or owned" (release plan "Common Data Service User security role renamed Basic User"): user
  depth on the core record tables, read of the users and of the organization-wide settings, no Sync
  to Outlook; **Salesperson** (Dynamics 365 Sales) works with its own sales records and, as in the
  privilege reference ("Privileges not associated with an entity", Dynamics CRM 2013/2015 developer
  guide; "Miscellaneous privileges", power-platform/admin/miscellaneous-privileges), holds
  ``prvSyncToOutlook`` ("Sync to Outlook"). Microsoft publishes no complete privilege list for these
  roles; the lists here are the simulator's reading of those descriptions. They exist at start,
  without any /_sim call; /_sim/users assigns them by name like any other role.
- ``GET systemusers(<id>)/Microsoft.Dynamics.CRM.RetrieveUserPrivileges`` ("RetrieveUserPrivileges
  Function", Web API function reference; "RolePrivilege ComplexType"): the privileges the user holds
  through its roles, one per privilege at its greatest depth, each ``{"Depth", "PrivilegeId",
  "BusinessUnitId", "PrivilegeName"}``; ``Depth`` is the PrivilegeDepth enum member name
  (``Basic``, ``Local``, ``Deep``, ``Global``). The caller needs read access to the user.
- ``roles`` and ``privileges`` are readable entity sets; their rows mirror the simulator's roles.
- ``GET systemusers(<id>)/systemuserroles_association`` lists a user's roles and
  ``POST .../systemuserroles_association/$ref`` with ``{"@odata.id": ".../roles(<roleid>)"}`` assigns
  one ("Associate and disassociate table rows using the Web API"); assigning needs ``prvAssignRole``.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from simulators.dataverse import errors
from simulators.dataverse.schema import ACTIVITY_TABLES, load_tables
from simulators.dataverse.security import (
    ACT_ON_BEHALF,
    BUSINESS_UNIT_ID,
    TABLE_ACTIONS,
    Caller,
    Security,
)
from simulators.dataverse.store import Ref, Store

SYSTEM_ADMINISTRATOR = "System Administrator"
BASIC_USER = "Basic User"
SALESPERSON = "Salesperson"
SYNC_TO_OUTLOOK = "prvSyncToOutlook"
ASSIGN_ROLE = "prvAssignRole"
# Privileges not tied to a table that the predefined roles hold (privilege reference, see above).
NAMED_PRIVILEGES = (
    ACT_ON_BEHALF,
    SYNC_TO_OUTLOOK,
    ASSIGN_ROLE,
    "prvGoOffline",
    "prvUseOfficeApps",
    "prvExportToExcel",
    "prvBulkDelete",
)
DEPTH_NAMES = {1: "Basic", 2: "Local", 3: "Deep", 4: "Global"}
_NAMESPACE = uuid.UUID("5b0e1c3a-0a11-4c0e-9a11-0000000f0001")
RECORD_TABLES = ("contact", "account", "lead", "email", "appointment", "task")
READ_ONLY_FOR_USERS = (
    "systemuser",
    "timezonedefinition",
    "sdkmessage",
    "sdkmessagefilter",
    "syncattributemapping",
    "syncattributemappingprofile",
    "role",
    "privilege",
    "savedquery",
)
NAV = re.compile(
    r"^systemusers\((?P<user>[0-9a-fA-F-]{36})\)/(?:(?P<fn>Microsoft\.Dynamics\.CRM\.RetrieveUserPrivileges)(?:\(\))?"
    r"|(?P<nav>systemuserroles_association)(?P<ref>/\$ref)?)$"
)


def identifier(name: str) -> str:
    """A stable id for a role or privilege name (the same in every simulator run)."""
    return str(uuid.uuid5(_NAMESPACE, name))


def _own_records(depth: str) -> dict[str, dict[str, str]]:
    return {name: dict.fromkeys(TABLE_ACTIONS, depth) for name in RECORD_TABLES}


def predefined_roles() -> dict[str, dict[str, Any]]:
    """Role specs (the /_sim/roles format) of the roles a new organization has."""
    tables = load_tables()
    everything = {name: dict.fromkeys(TABLE_ACTIONS, "organization") for name in tables}
    read_settings = {name: {"read": "organization"} for name in READ_ONLY_FOR_USERS}
    own_settings = {
        "usersettings": {"read": "user", "write": "user"},
        # Personal views and Outlook filters: a user's own userquery rows (savedqueries module).
        "userquery": dict.fromkeys(TABLE_ACTIONS, "user"),
        # Their own system jobs (bulk deletes they submitted).
        "asyncoperation": {"read": "user"},
        "bulkdeleteoperation": {"read": "user"},
    }
    basic = {**_own_records("user"), **read_settings, **own_settings}
    sales = {**_own_records("user"), **read_settings, **own_settings}
    for name in ("account", "contact"):
        sales[name] = {**sales[name], "read": "organization", "appendto": "organization"}
    return {
        SYSTEM_ADMINISTRATOR: {
            "tables": everything,
            "privileges": dict.fromkeys(NAMED_PRIVILEGES, "organization"),
            "system_administrator": True,
        },
        BASIC_USER: {
            "tables": basic,
            "privileges": {"prvUseOfficeApps": "organization", "prvExportToExcel": "organization"},
        },
        SALESPERSON: {
            "tables": sales,
            "privileges": {
                SYNC_TO_OUTLOOK: "organization",
                "prvGoOffline": "organization",
                "prvUseOfficeApps": "organization",
                "prvExportToExcel": "organization",
            },
        },
    }


def install(security: Security) -> None:
    for name, spec in predefined_roles().items():
        security.add_role(name, spec)


def materialize(store: Store, security: Security) -> None:
    """Write (or refresh) the role and privilege rows from the roles the simulator knows."""
    names: set[str] = set()
    for role_name, role in security.roles.items():
        role_id = identifier(f"role:{role_name}")
        if store.get("role", role_id) is None:
            store.put(
                "role",
                {
                    "roleid": role_id,
                    "name": role_name,
                    "businessunitid": Ref("businessunit", BUSINESS_UNIT_ID),
                    "roletemplateid": role_id,
                    "ismanaged": role_name in predefined_roles(),
                    "versionnumber": store.next_version(),
                },
                "roleid",
            )
        names.update(role.privileges)
    names.update(
        f"prv{action}{table.privilege_suffix}"
        for table in load_tables().values()
        for action in TABLE_ACTIONS.values()
    )
    names.update(NAMED_PRIVILEGES)
    for name in sorted(names):
        privilege_id = identifier(f"privilege:{name}")
        if store.get("privilege", privilege_id) is None:
            store.put(
                "privilege",
                {
                    "privilegeid": privilege_id,
                    "name": name,
                    "accessright": 0,
                    "canbebasic": True,
                    "canbelocal": True,
                    "canbedeep": True,
                    "canbeglobal": True,
                    "versionnumber": store.next_version(),
                },
                "privilegeid",
            )


def user_privileges(security: Security, user_id: str) -> list[dict[str, Any]]:
    """RolePrivilege entries of a user: the union over its roles at the greatest depth."""
    user = security.users.get(user_id.lower())
    if user is None:
        raise errors.not_found("systemuser", user_id)
    depths: dict[str, int] = {}
    for role_name in user.roles:
        for privilege, depth in security.roles[role_name].privileges.items():
            if depth > 0:
                depths[privilege] = max(depth, depths.get(privilege, 0))
    return [
        {
            "Depth": DEPTH_NAMES[min(depth, 4)],
            "PrivilegeId": identifier(f"privilege:{name}"),
            "BusinessUnitId": BUSINESS_UNIT_ID,
            "PrivilegeName": name,
        }
        for name, depth in sorted(depths.items())
    ]


def role_by_id(security: Security, role_id: str) -> str:
    for name in security.roles:
        if identifier(f"role:{name}") == role_id.lower():
            return name
    raise errors.not_found("role", role_id)


def assign(security: Security, caller: Caller, user_id: str, role_id: str) -> None:
    """Associate a role with a user (systemuserroles_association/$ref)."""
    if caller.depth(ASSIGN_ROLE) == 0:
        raise errors.DataverseError(
            403,
            errors.PRIVILEGE_DENIED,
            f"Principal user (Id={caller.user_id}, type=8) is missing {ASSIGN_ROLE} privilege.",
        )
    user = security.users.get(user_id.lower())
    if user is None:
        raise errors.not_found("systemuser", user_id)
    name = role_by_id(security, role_id)
    if name not in user.roles:
        user.roles.append(name)
        security.add_user(user)


__all__ = [
    "ACTIVITY_TABLES",
    "NAV",
    "assign",
    "install",
    "materialize",
    "predefined_roles",
    "user_privileges",
]
