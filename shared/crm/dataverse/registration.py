"""Registering crmsync's Dataverse webhook: a service endpoint and its asynchronous steps.

"Register a WebHook" (learn.microsoft.com/power-apps/developer/data-platform/register-web-hook): a
``serviceendpoint`` row with ``contract`` 8 (Webhook), ``authtype`` 4 (WebhookKey: Dataverse sends
the key as ``?code=``), ``url`` and ``authvalue``; then one ``sdkmessageprocessingstep`` per message
and table, bound to the endpoint (``eventhandler_serviceendpoint``), ``mode`` 1 (asynchronous),
``stage`` 40 (post-operation), with the message (``sdkmessageid``) and its filter for the table
(``sdkmessagefilterid``, ``primaryobjecttypecode``). Registering again updates the endpoint's URL
and key and adds only missing steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.crm.dataverse.transport import Transport
from shared.crm.dataverse.wire import Request, json_body

ENDPOINT_NAME = "crmsync"
MESSAGES = ("Create", "Update", "Delete", "Assign", "SetState")
TABLES = ("contact", "appointment", "task")
WEBHOOK, WEBHOOK_KEY, ASYNCHRONOUS, POST_OPERATION = 8, 4, 1, 40


@dataclass(frozen=True, slots=True)
class WebhookRegistration:
    endpoint_id: str
    steps_created: int
    steps_kept: int


async def _rows(transport: Transport, entity_set: str, params: dict[str, str]) -> list[dict[str, Any]]:
    response = await transport.send(Request("GET", entity_set), caller=None, params=params)
    return list((json_body(response.content) or {}).get("value", []))


async def _create(transport: Transport, entity_set: str, body: dict[str, Any]) -> str:
    response = await transport.send(Request("POST", entity_set, body=body), caller=None, replay_safe=False)
    entity_id = str(response.headers.get("OData-EntityId", ""))
    return entity_id.rsplit("(", 1)[-1].rstrip(")")


async def register_webhook(
    transport: Transport,
    *,
    url: str,
    key: str,
    messages: Sequence[str] = MESSAGES,
    tables: Sequence[str] = TABLES,
) -> WebhookRegistration:
    endpoint = {
        "name": ENDPOINT_NAME,
        "contract": WEBHOOK,
        "authtype": WEBHOOK_KEY,
        "url": url,
        "authvalue": key,
    }
    found = await _rows(
        transport,
        "serviceendpoints",
        {"$filter": f"name eq '{ENDPOINT_NAME}'", "$select": "serviceendpointid"},
    )
    if found:
        endpoint_id = str(found[0]["serviceendpointid"])
        await transport.send(Request("PATCH", f"serviceendpoints({endpoint_id})", body=endpoint), caller=None)
    else:
        endpoint_id = await _create(transport, "serviceendpoints", endpoint)
    existing = {
        str(row.get("name"))
        for row in await _rows(
            transport,
            "sdkmessageprocessingsteps",
            {"$filter": f"_eventhandler_value eq {endpoint_id}", "$select": "name"},
        )
    }
    created = kept = 0
    for message in messages:
        (message_row,) = await _rows(
            transport, "sdkmessages", {"$filter": f"name eq '{message}'", "$select": "sdkmessageid"}
        )
        message_id = message_row["sdkmessageid"]
        for table in tables:
            name = f"crmsync {message} {table}"
            if name in existing:
                kept += 1
                continue
            (filter_row,) = await _rows(
                transport,
                "sdkmessagefilters",
                {
                    "$filter": f"primaryobjecttypecode eq '{table}' and _sdkmessageid_value eq {message_id}",
                    "$select": "sdkmessagefilterid",
                },
            )
            await _create(
                transport,
                "sdkmessageprocessingsteps",
                {
                    "name": name,
                    "mode": ASYNCHRONOUS,
                    "stage": POST_OPERATION,
                    "sdkmessageid@odata.bind": f"/sdkmessages({message_id})",
                    "sdkmessagefilterid@odata.bind": "/sdkmessagefilters({})".format(
                        filter_row["sdkmessagefilterid"]
                    ),
                    "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({endpoint_id})",
                },
            )
            created += 1
    return WebhookRegistration(endpoint_id, created, kept)
