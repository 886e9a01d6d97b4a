"""Change tracking: one page of a table's change stream, and who a call runs as.

use-change-tracking-synchronize-data-external-systems (powerapps-docs, learn.microsoft.com/power-apps
/developer/data-platform/...): ``Prefer: odata.track-changes``, ``@odata.deltaLink``, ``$deletedEntity``
rows; an expired token means a full resync.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from shared.crm.dataverse.transport import Transport
from shared.crm.dataverse.wire import LOOKUP_ANNOTATIONS, Request, json_body
from shared.crm.port import ChangePage, WhoAmI
from shared.crm.tables import table_info


def _own_link(transport: Transport, link: str) -> str:
    """A next/delta link must point back at this Web API: the bearer token goes with it."""
    base, given = urlsplit(transport.base), urlsplit(link)
    if (given.scheme, given.netloc) != (base.scheme, base.netloc) or not given.path.startswith(base.path):
        raise ValueError("change-tracking link does not belong to this Dataverse Web API")
    return link


async def read_changes(
    transport: Transport,
    table: str,
    *,
    select: Sequence[str],
    link: str | None,
    page_size: int | None,
    caller: str | None,
) -> ChangePage:
    info = table_info(table)
    prefer = f"odata.track-changes,{LOOKUP_ANNOTATIONS}"
    if page_size:
        prefer += f",odata.maxpagesize={page_size}"
    request = Request("GET", info.entity_set, headers={"Prefer": prefer})
    if link is None:
        columns = [info.primary_id, *(column for column in select if column != info.primary_id)]
        response = await transport.send(request, caller=caller, params={"$select": ",".join(columns)})
    else:
        response = await transport.send(request, caller=caller, url=_own_link(transport, link))
    document = json_body(response.content) or {}
    changed: list[Mapping[str, Any]] = []
    deleted: list[uuid.UUID] = []
    for row in document.get("value", []):
        if "$deletedEntity" in str(row.get("@odata.context", "")):
            deleted.append(uuid.UUID(row["id"]))
        else:
            changed.append(row)
    return ChangePage(
        table=table,
        changed=tuple(changed),
        deleted=tuple(deleted),
        next_link=document.get("@odata.nextLink"),
        delta_link=document.get("@odata.deltaLink"),
    )


async def whoami(transport: Transport, *, caller: str | None) -> WhoAmI:
    response = await transport.send(Request("GET", "WhoAmI"), caller=caller)
    body = json_body(response.content) or {}
    return WhoAmI(
        user_id=uuid.UUID(body["UserId"]),
        business_unit_id=uuid.UUID(body["BusinessUnitId"]),
        organization_id=uuid.UUID(body["OrganizationId"]),
    )
