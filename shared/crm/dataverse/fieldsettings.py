"""The organization's field settings: synchronization directions and column-level security.

- field synchronization mappings ("What fields can be synchronized with Outlook?" and "Control field
  synchronization between Dynamics 365 and Outlook or Exchange", Dynamics 365 admin guide): one
  per Outlook field, its CRM column, its direction (0 none, 1 to Exchange, 2 to Dynamics, 3 both)
  and for aggregates the columns it computes from, read with RetrievePrincipalSyncAttributeMappings.
- Column-level security ("Column-level security with code", learn.microsoft.com/power-apps/
  developer/data-platform/column-level-security): the field permissions of the System
  Administrator field security profile (``572329c1-a042-4e22-be47-367c6374ea45``) list every
  secured column; a user's access is the union of the ``fieldpermission`` rows (``canread``,
  ``canupdate``, ``cancreate``: 4 Allowed, 0 Not Allowed) of the profiles associated with the user
  (``systemuserprofiles_association``) and with the teams the user is a member of
  (``teammembership_association``, then each team's ``teamprofiles_association``: "Field security
  tables", learn.microsoft.com/power-apps/developer/data-platform/field-security-entities - profiles
  restrict access "to specified users and teams").

Both are read as the application (``caller=None``): they are organization settings, and the
engine caches them (:mod:`shared.sync.field_rules`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from shared.crm.dataverse import changes
from shared.crm.dataverse.changes import _own_link
from shared.crm.dataverse.transport import Transport
from shared.crm.dataverse.wire import Request, json_body
from shared.crm.port import ColumnPermission, ColumnSecurity, FieldSyncMapping

SYSTEM_ADMINISTRATOR_PROFILE = uuid.UUID("572329c1-a042-4e22-be47-367c6374ea45")
ALLOWED = 4
#: Object type codes of the synchronized tables (each table's ObjectTypeCode in its entity reference).
ENTITY_TYPE_CODES = {"contact": 2, "appointment": 4201, "task": 4212}
_MAX_PAGES = 20


def _check_tables(tables: Sequence[str]) -> None:
    if not tables or any(not name.isidentifier() for name in tables):
        raise ValueError("tables must be logical names")


def _tables_filter(tables: Sequence[str]) -> str:
    _check_tables(tables)
    return " or ".join(f"entityname eq '{name}'" for name in tables)


async def _rows(transport: Transport, path: str, params: dict[str, str] | None) -> list[dict[str, Any]]:
    request = Request("GET", path)
    response = await transport.send(request, caller=None, params=params)
    rows: list[dict[str, Any]] = []
    for _ in range(_MAX_PAGES):
        document = json_body(response.content) or {}
        rows += document.get("value", [])
        next_link = document.get("@odata.nextLink")
        if not next_link:
            return rows
        response = await transport.send(request, caller=None, url=_own_link(transport, next_link))
    raise ValueError(f"{path}: more pages than field settings can fill")


async def field_sync_mappings(transport: Transport, tables: Sequence[str]) -> list[FieldSyncMapping]:
    """The field synchronization rows of ``tables`` that apply to the application user.

    A syncattributemapping row names no table in the Web API (Dataverse keeps an object type code,
    ``EntityTypeCode``, that its rows do not carry), so the rows are read with the function Dynamics'
    own clients use, ``RetrievePrincipalSyncAttributeMappings`` bound to a systemuser: its
    AttributeMapping values carry ``EntityTypeCode`` ("AttributeMapping ComplexType"). Two requests
    (WhoAmI, the function); the engine caches the answer."""
    _check_tables(tables)
    who = await changes.whoami(transport, caller=None)
    path = f"systemusers({who.user_id})/Microsoft.Dynamics.CRM.RetrievePrincipalSyncAttributeMappings()"
    response = await transport.send(Request("GET", path), caller=None)
    wanted = {ENTITY_TYPE_CODES[t]: t for t in tables if t in ENTITY_TYPE_CODES}
    mappings: list[FieldSyncMapping] = []
    for row in (json_body(response.content) or {}).get("AttributeMappings", []):
        table = wanted.get(row.get("EntityTypeCode"))
        column, direction = row.get("AttributeCrmName"), row.get("SyncDirection")
        if table is None or not isinstance(column, str) or not isinstance(direction, int):
            continue
        computed = row.get("ComputedProperties") if row.get("IsComputed") else None
        members = tuple(str(c).strip() for c in computed or () if str(c).strip())
        default = row.get("DefaultSyncDirection")
        mappings.append(
            FieldSyncMapping(
                table, column, direction, members or (column,), default if isinstance(default, int) else None
            )
        )
    return mappings


async def column_security(transport: Transport, user_id: uuid.UUID, tables: Sequence[str]) -> ColumnSecurity:
    """The secured columns of ``tables`` and what ``user_id`` may do with them."""
    select = "entityname,attributelogicalname,canread,canupdate,cancreate,_fieldsecurityprofileid_value"
    rows = await _rows(transport, "fieldpermissions", {"$select": select, "$filter": _tables_filter(tables)})
    profiles = await _rows(
        transport,
        f"systemusers({user_id})/systemuserprofiles_association",
        {"$select": "fieldsecurityprofileid"},
    )
    teams = await _rows(
        transport, f"systemusers({user_id})/teammembership_association", {"$select": "teamid"}
    )
    for team in teams:
        profiles += await _rows(
            transport,
            f"teams({team.get('teamid')})/teamprofiles_association",
            {"$select": "fieldsecurityprofileid"},
        )
    mine = {str(row.get("fieldsecurityprofileid", "")).lower() for row in profiles}
    admin = str(SYSTEM_ADMINISTRATOR_PROFILE)
    secured = {_key(row) for row in rows if _profile(row) == admin}
    permissions = {
        key: ColumnPermission(True, True, True) if admin in mine else ColumnPermission() for key in secured
    }
    for row in rows:
        key = _key(row)
        if key in secured and _profile(row) in mine:
            held = permissions[key]
            permissions[key] = ColumnPermission(
                read=held.read or row.get("canread") == ALLOWED,
                update=held.update or row.get("canupdate") == ALLOWED,
                create=held.create or row.get("cancreate") == ALLOWED,
            )
    return ColumnSecurity(permissions)


def _key(row: dict[str, Any]) -> tuple[str, str]:
    return str(row.get("entityname")), str(row.get("attributelogicalname"))


def _profile(row: dict[str, Any]) -> str:
    return str(row.get("_fieldsecurityprofileid_value", "")).lower()
