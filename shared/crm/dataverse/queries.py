"""Row queries and privilege reads: an OData ``$filter`` over a table, and RetrieveUserPrivileges.

- "Query data using the Web API" (learn.microsoft.com/power-apps/developer/data-platform/webapi/
  query-data-web-api): ``$select``, ``$filter``; lookups as ``_<column>_value``; pages follow
  ``@odata.nextLink``. Run as the caller, a query returns only the rows the caller may read, so a
  synchronization filter evaluated this way is Dataverse's own verdict under the user's roles.
- "Query data using FetchXml" (fetchxml/overview): ``GET <entityset>?fetchXml=<url-encoded>``; more
  rows than a page are announced by ``@Microsoft.Dynamics.CRM.morerecords`` and read with the fetch
  element's ``page`` attribute ("Page results using FetchXml").
- "RetrieveUserPrivileges Function" (Web API function reference): the privileges a user holds
  through its roles, ``RolePrivileges`` of ``{Depth, PrivilegeId, BusinessUnitId, PrivilegeName}``.
- "Specify time zone settings for a user" (power-apps/developer/data-platform/specify-time-zone-
  settings-user): ``usersettings.timezonecode`` is the user's zone; "for a list of time zone code
  values supported, use the TimeZoneDefinition.TimeZoneCode attribute; TimeZoneDefinition.StandardName
  stores the standard names" - the Windows zone names, so the organization's own table maps codes.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

from shared.crm.dataverse.changes import _own_link
from shared.crm.dataverse.transport import Transport
from shared.crm.dataverse.wire import LOOKUP_ANNOTATIONS, Request, json_body
from shared.crm.tables import table_info

_MAX_PAGES = 50  # a synchronization filter over a page of changed ids never needs more


async def query_rows(
    transport: Transport,
    table: str,
    *,
    where: str,
    select: Sequence[str],
    caller: str | None,
    expand: str | None = None,
) -> list[dict[str, Any]]:
    """Every row of ``table`` matching the OData ``where``, as the caller may read them. With an
    ``expand``, ``If-None-Match: null``: "queries which expand collection-valued navigation
    properties may return cached data for those properties" unless told not to ("Join tables using
    OData", learn.microsoft.com/power-apps/developer/data-platform/webapi/query/join-tables)."""
    info = table_info(table)
    headers = {"Prefer": LOOKUP_ANNOTATIONS} | ({"If-None-Match": "null"} if expand else {})
    request = Request("GET", info.entity_set, headers=headers)
    params = {"$filter": where, "$select": ",".join(dict.fromkeys([info.primary_id, *select]))}
    if expand:
        params["$expand"] = expand
    response = await transport.send(request, caller=caller, params=params)
    rows: list[dict[str, Any]] = []
    for _ in range(_MAX_PAGES):
        document = json_body(response.content) or {}
        rows += document.get("value", [])
        next_link = document.get("@odata.nextLink")
        if not next_link:
            return rows
        response = await transport.send(request, caller=caller, url=_own_link(transport, next_link))
    raise ValueError("a filter query returned more pages than a page of changes can need")


async def fetch_rows(
    transport: Transport, table: str, *, fetch_xml: str, caller: str | None
) -> list[dict[str, Any]]:
    """Every row of a FetchXML query over ``table``, as the caller may read them."""
    info = table_info(table)
    request = Request("GET", info.entity_set, headers={"Prefer": LOOKUP_ANNOTATIONS})
    rows: list[dict[str, Any]] = []
    query = fetch_xml
    for page in range(2, _MAX_PAGES + 2):
        response = await transport.send(request, caller=caller, params={"fetchXml": query})
        document = json_body(response.content) or {}
        rows += document.get("value", [])
        if not document.get("@Microsoft.Dynamics.CRM.morerecords"):
            return rows
        query = _paged(fetch_xml, page)
    raise ValueError("a filter query returned more pages than a page of changes can need")


def _paged(fetch_xml: str, page: int) -> str:
    root = ET.fromstring(fetch_xml)  # noqa: S314 - crmsync's own query text (crm_filter.with_ids)
    root.set("page", str(page))
    return ET.tostring(root, encoding="unicode")


async def user_privileges(transport: Transport, user_id: uuid.UUID, *, caller: str | None) -> frozenset[str]:
    """The names of the privileges ``user_id`` holds through its security roles."""
    path = f"systemusers({user_id})/Microsoft.Dynamics.CRM.RetrieveUserPrivileges"
    response = await transport.send(Request("GET", path), caller=caller)
    body = json_body(response.content) or {}
    return frozenset(
        str(row["PrivilegeName"]) for row in body.get("RolePrivileges", []) if "PrivilegeName" in row
    )


async def user_time_zone(transport: Transport, user_id: uuid.UUID, *, caller: str | None) -> str | None:
    """The Windows standard name of a user's ``usersettings.timezonecode``, or None when unset."""
    settings = await transport.send(
        Request("GET", f"usersettingscollection({user_id})"),
        caller=caller,
        params={"$select": "timezonecode"},
    )
    code = (json_body(settings.content) or {}).get("timezonecode")
    if not isinstance(code, int) or isinstance(code, bool):
        return None
    definitions = await transport.send(
        Request("GET", "timezonedefinitions"),
        caller=caller,
        params={"$filter": f"timezonecode eq {code}", "$select": "standardname"},
    )
    rows = (json_body(definitions.content) or {}).get("value") or []
    name = rows[0].get("standardname") if rows else None
    return name if isinstance(name, str) and name else None
