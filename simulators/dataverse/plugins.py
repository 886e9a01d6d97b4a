"""Webhook registration (serviceendpoint, sdkmessageprocessingstep) and asynchronous delivery.

Behaviour from these learn.microsoft.com pages (power-apps/developer/data-platform/...):

- "Register a WebHook" (register-web-hook): a webhook is a ``serviceendpoint`` row with
  ``contract`` 8; authentication ``authtype`` 4 WebhookKey sends the key as the query string
  parameter ``code`` (``?code=<key>``), 5 HttpHeader sends each ``<setting name value>`` of
  ``authvalue`` as a header, 6 HttpQueryString as query parameters. ``authvalue`` cannot be
  retrieved (reads answer null). Steps are ``sdkmessageprocessingstep`` rows binding the endpoint
  through ``eventhandler_serviceendpoint``, with ``sdkmessageid`` and ``sdkmessagefilterid``
  (``sdkmessagefilter.primaryobjecttypecode`` names the table).
- "Use WebHooks to create external handlers for server events" (use-webhooks): the POST body is the
  JSON of a RemoteExecutionContext; headers ``x-ms-dynamics-organization``,
  ``x-ms-dynamics-entity-name``, ``x-ms-dynamics-request-name``, ``x-ms-correlation-request-id``;
  when the payload exceeds 256 KB, ``x-ms-dynamics-msg-size-exceeded`` is sent and ParentContext,
  InputParameters, PreEntityImages and PostEntityImages are removed. A response outside 2xx fails the
  job; on 502, 503 or 504 the service makes exactly one more attempt. Timeout 60 s.
- "Write a plug-in" / "Event framework": asynchronous steps (``mode`` 1) run after the operation's
  transaction commits (post-operation, ``stage`` 40), in the background; a rolled-back operation
  triggers nothing.
- "Behavior of specialized update operations" (special-update-operation-behavior): steps on Update
  run once for the ordinary columns, then once for the owner, then once for state/status; the
  deprecated Assign and SetState messages are still raised for an owner or state/status change
  (the page: Assign and Change Status registrations "continue to be triggered").
- "Use bulk operation messages": CreateMultiple/UpdateMultiple/UpsertMultiple raise Create/Update
  for every record, so steps on Create and Update fire for bulk writes too.
- Entity images ("Entity images", sdkmessageprocessingstepimage): ``imagetype`` 0 pre, 1 post,
  2 both; ``attributes`` lists the columns (empty: all); ``entityalias`` is the image's key.

The simulator delivers only asynchronous post-operation steps; a step with another mode or stage,
an endpoint with another contract, or another authentication type is refused (400) rather than
silently never called. Writes made through the control API (/_sim, as the system) raise no events.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from simulators.dataverse import errors
from simulators.dataverse.schema import Table, load_tables
from simulators.dataverse.security import BUSINESS_UNIT_ID, ORGANIZATION_ID, Caller
from simulators.dataverse.store import Record, Ref, Store

WEBHOOK_CONTRACT = 8
WEBHOOK_KEY, HTTP_HEADER, HTTP_QUERY_STRING = 4, 5, 6
ASYNCHRONOUS, POST_OPERATION = 1, 40
SIZE_LIMIT = 256 * 1024
RETRY_STATUSES = frozenset({502, 503, 504})
TIMEOUT_SECONDS = 60.0
MESSAGES = ("Create", "Update", "Delete", "Assign", "SetState")
SDK = "http://schemas.microsoft.com/xrm/2011/Contracts"
OPTION_TYPES = frozenset({"Picklist", "State", "Status"})
ORGANIZATION_NAME = "crmsyncsim"
LOG_LIMIT = 20_000  # deliveries kept for GET /_sim/webhooks (in memory only)


@dataclass
class Event:
    """One operation on one row, as a step sees it."""

    message: str
    table: Table
    record_id: str
    before: Record | None
    after: Record | None
    changed: list[str]
    caller: Caller
    organization: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Delivery:
    step_id: str
    url: str
    headers: dict[str, str]
    body: bytes
    message: str
    table: str
    record_id: str


def _date(value: str | None) -> str | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return f"/Date({int(moment.timestamp() * 1000)})/"


def reference(table: str, record_id: str) -> dict[str, Any]:
    return {
        "__type": f"EntityReference:{SDK}",
        "Id": record_id,
        "KeyAttributes": [],
        "LogicalName": table,
        "Name": None,
        "RowVersion": None,
    }


def _option(value: int) -> dict[str, Any]:
    return {"__type": f"OptionSetValue:{SDK}", "Value": value}


def _value(table: Table, column: str, value: Any) -> Any:
    """A column value as the DataContract JSON of the SDK types."""
    if value is None:
        return None
    if isinstance(value, Ref):
        return reference(value.table, value.id)
    kind = table.columns[column].type if column in table.columns else ""
    if kind in OPTION_TYPES:
        return _option(int(value))
    if kind == "Money":
        return {"__type": f"Money:{SDK}", "Value": value}
    if kind == "DateTime":
        return _date(str(value))
    return value


def entity(
    table: Table, record_id: str, record: Record, columns: list[str], typed: bool = True
) -> dict[str, Any]:
    attributes = [
        {"key": column, "value": _value(table, column, record.get(column))}
        for column in columns
        if column in record and column != "versionnumber"
    ]
    body: dict[str, Any] = {"__type": f"Entity:{SDK}"} if typed else {}
    body.update(
        {
            "Attributes": attributes,
            "EntityState": None,
            "FormattedValues": [],
            "Id": record_id,
            "KeyAttributes": [],
            "LogicalName": table.logical_name,
            "RelatedEntities": [],
            "RowVersion": str(record["versionnumber"]) if "versionnumber" in record else None,
        }
    )
    return body


# -- registration -----------------------------------------------------------------------------------
def check_endpoint(record: Record) -> None:
    if record.get("contract") != WEBHOOK_CONTRACT:
        raise errors.bad_request(
            "The simulator implements only webhook service endpoints (contract 8); "
            f"contract {record.get('contract')} is not simulated."
        )
    if record.get("authtype") not in {WEBHOOK_KEY, HTTP_HEADER, HTTP_QUERY_STRING}:
        raise errors.bad_request(
            "A webhook's authtype must be WebhookKey (4), HttpHeader (5) or HttpQueryString (6)."
        )
    url = str(record.get("url") or "")
    if urlsplit(url).scheme not in {"http", "https"} or not urlsplit(url).netloc:
        raise errors.bad_request("A webhook needs an absolute http(s) url.")
    if not record.get("authvalue"):
        raise errors.bad_request("A webhook needs an authvalue (the key or the settings).")
    if record.get("authtype") != WEBHOOK_KEY:
        _settings(str(record["authvalue"]))


def check_step(store: Store, record: Record) -> None:
    message = record.get("sdkmessageid")
    if not isinstance(message, Ref) or store.get("sdkmessage", message.id) is None:
        raise errors.bad_request("A step needs sdkmessageid bound to an sdkmessage.")
    handler = record.get("eventhandler")
    if not isinstance(handler, Ref) or handler.table != "serviceendpoint":
        raise errors.bad_request("A webhook step binds its endpoint through eventhandler_serviceendpoint.")
    flt = record.get("sdkmessagefilterid")
    if isinstance(flt, Ref):
        row = store.get("sdkmessagefilter", flt.id)
        if row is None or row["sdkmessageid"].id != message.id:
            raise errors.bad_request("The sdkmessagefilterid does not belong to the step's message.")
    if record.get("stage") != POST_OPERATION or record.get("mode") != ASYNCHRONOUS:
        raise errors.bad_request(
            "The simulator delivers only asynchronous (mode 1) post-operation (stage 40) webhook steps."
        )


SETTING = re.compile(r"""<setting\s+name\s*=\s*"([^"]*)"\s+value\s*=\s*"([^"]*)"\s*/>""")


def _settings(text: str) -> list[tuple[str, str]]:
    """HttpHeader / HttpQueryString authvalue: <settings><setting name="k" value="v" /></settings>."""
    pairs = SETTING.findall(text)
    if not text.strip().startswith("<settings>") or not pairs:
        raise errors.bad_request(
            'HttpHeader / HttpQueryString authvalue is <settings><setting name="k" value="v" /></settings>.'
        )
    return [(str(name), str(value)) for name, value in pairs]


# -- events -----------------------------------------------------------------------------------------
def update_messages(
    table: Table, payload: dict[str, Any], before: Record, after: Record
) -> list[tuple[str, list[str]]]:
    """The events one Update raises ("Behavior of specialized update operations"): Update runs once for
    the ordinary columns, once more for the owner and once more for state/status; the legacy Assign
    and SetState messages are still raised for an owner or state/status change."""
    named = {name.split("@", 1)[0] for name in payload if not name.startswith("@")}
    named = {table.navigation[n][0] if n in table.navigation else n for n in named}
    audit: list[str] = [c for c in ("modifiedon", "modifiedby", "modifiedonbehalfby") if c in after]
    computed = [c for c in ("fullname",) if c in after and after.get(c) != before.get(c)]
    owner_changed = "ownerid" in named and after.get("ownerid") != before.get("ownerid")
    state = sorted(named & {"statecode", "statuscode"})
    rest = sorted(named - {"ownerid", "statecode", "statuscode", table.primary_id})
    raised: list[tuple[str, list[str]]] = []
    if rest or not (owner_changed or state):
        raised.append(("Update", rest + computed + audit))
    if owner_changed:
        raised += [("Update", ["ownerid", *audit]), ("Assign", ["ownerid"])]
    if state:
        raised += [("Update", ["statecode", "statuscode", *audit]), ("SetState", ["statecode", "statuscode"])]
    return raised


def _message_name(store: Store, ref: Any) -> str | None:
    row = store.get("sdkmessage", ref.id) if isinstance(ref, Ref) else None
    return str(row["name"]) if row else None


def matching_steps(store: Store, message: str, table: str, changed: list[str]) -> list[Record]:
    steps = []
    for step in store.rows["sdkmessageprocessingstep"].values():
        if step.get("statecode", 0) != 0 or _message_name(store, step.get("sdkmessageid")) != message:
            continue
        flt = step.get("sdkmessagefilterid")
        if isinstance(flt, Ref):
            row = store.get("sdkmessagefilter", flt.id)
            if row is None or row.get("primaryobjecttypecode") != table:
                continue
        filtering = [
            a.strip().lower() for a in str(step.get("filteringattributes") or "").split(",") if a.strip()
        ]
        if message == "Update" and filtering and not set(filtering) & set(changed):
            continue
        steps.append(step)
    return sorted(steps, key=lambda s: (s.get("rank") or 0, s["sdkmessageprocessingstepid"]))


def _input_parameters(event: Event) -> list[dict[str, Any]]:
    table, record_id = event.table, event.record_id
    target = reference(table.logical_name, record_id)
    if event.message == "Create":
        after = event.after or {}
        columns = [c for c, v in after.items() if v is not None]
        return [{"key": "Target", "value": entity(table, record_id, after, columns)}]
    if event.message == "Update":
        after = event.after or {}
        columns = [table.primary_id, *event.changed]
        return [{"key": "Target", "value": entity(table, record_id, after, columns)}]
    if event.message == "Delete":
        return [{"key": "Target", "value": target}]
    if event.message == "Assign":
        owner = (event.after or {}).get("ownerid")
        assignee = reference(owner.table, owner.id) if isinstance(owner, Ref) else None
        return [{"key": "Target", "value": target}, {"key": "Assignee", "value": assignee}]
    after = event.after or {}
    return [
        {"key": "EntityMoniker", "value": target},
        {"key": "State", "value": _option(int(after.get("statecode") or 0))},
        {"key": "Status", "value": _option(int(after.get("statuscode") or 0))},
    ]


def _images(store: Store, step: Record, event: Event) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    pre: list[dict[str, Any]] = []
    post: list[dict[str, Any]] = []
    step_id = step["sdkmessageprocessingstepid"]
    for image in store.rows["sdkmessageprocessingstepimage"].values():
        owner = image.get("sdkmessageprocessingstepid")
        if not isinstance(owner, Ref) or owner.id != step_id:
            continue
        wanted = [a.strip().lower() for a in str(image.get("attributes") or "").split(",") if a.strip()]
        alias = str(image.get("entityalias") or image.get("name") or "Image")
        kind = image.get("imagetype")
        for source, into, kinds in ((event.before, pre, {0, 2}), (event.after, post, {1, 2})):
            if source is None or kind not in kinds:
                continue
            columns = wanted or [c for c, v in source.items() if v is not None]
            into.append({"key": alias, "value": entity(event.table, event.record_id, source, columns, False)})
    table = event.table
    if event.after is not None and table.primary_name:
        # use-webhooks sample: asynchronous steps carry the primary name as a post image.
        columns = [table.primary_name, table.primary_id]
        post.append(
            {
                "key": "AsynchronousStepPrimaryName",
                "value": entity(table, event.record_id, event.after, columns, False),
            }
        )
    return pre, post


def context(store: Store, step: Record, event: Event) -> dict[str, Any]:
    """The RemoteExecutionContext JSON (use-webhooks, "Request Body")."""
    user_id = event.caller.user_id
    impersonating = step.get("impersonatinguserid")
    pre, post = _images(store, step, event)
    output = [{"key": "id", "value": event.record_id}] if event.message == "Create" else []
    correlation = str(uuid.uuid4())
    return {
        "BusinessUnitId": BUSINESS_UNIT_ID,
        "CorrelationId": correlation,
        "Depth": 1,
        "InitiatingUserId": user_id,
        "InputParameters": _input_parameters(event),
        "IsExecutingOffline": False,
        "IsInTransaction": False,
        "IsOfflinePlayback": False,
        "IsolationMode": 1,
        "MessageName": event.message,
        "Mode": ASYNCHRONOUS,
        "OperationCreatedOn": f"/Date({int(time.time() * 1000)})/",
        "OperationId": str(uuid.uuid4()),
        "OrganizationId": ORGANIZATION_ID,
        "OrganizationName": ORGANIZATION_NAME,
        "OutputParameters": output,
        "OwningExtension": reference("sdkmessageprocessingstep", step["sdkmessageprocessingstepid"]),
        "ParentContext": None,
        "PostEntityImages": post,
        "PreEntityImages": pre,
        "PrimaryEntityId": event.record_id,
        "PrimaryEntityName": event.table.logical_name,
        "RequestId": None,
        "SecondaryEntityName": "none",
        "SharedVariables": [],
        "Stage": POST_OPERATION,
        "UserId": impersonating.id if isinstance(impersonating, Ref) else user_id,
    }


def deliveries(store: Store, event: Event) -> list[Delivery]:
    """What each step registered for this event will be sent (built at commit, sent later)."""
    out: list[Delivery] = []
    for step in matching_steps(store, event.message, event.table.logical_name, event.changed):
        endpoint = store.get("serviceendpoint", step["eventhandler"].id)
        if endpoint is None:
            continue
        body_obj = context(store, step, event)
        headers = {
            "content-type": "application/json",
            "x-ms-dynamics-organization": event.organization,
            "x-ms-dynamics-entity-name": event.table.logical_name,
            "x-ms-dynamics-request-name": event.message,
            "x-ms-correlation-request-id": body_obj["CorrelationId"],
        }
        body = json.dumps(body_obj).encode()
        if len(body) > SIZE_LIMIT:
            headers["x-ms-dynamics-msg-size-exceeded"] = "true"
            for key in ("ParentContext", "InputParameters", "PreEntityImages", "PostEntityImages"):
                body_obj.pop(key, None)
            body = json.dumps(body_obj).encode()
        url = str(endpoint["url"])
        auth = str(endpoint.get("authvalue") or "")
        if endpoint.get("authtype") == WEBHOOK_KEY:
            url = _with_query(url, [("code", auth)])
        elif endpoint.get("authtype") == HTTP_QUERY_STRING:
            url = _with_query(url, _settings(auth))
        else:
            headers.update({k.lower(): v for k, v in _settings(auth)})
        out.append(
            Delivery(
                step["sdkmessageprocessingstepid"],
                url,
                headers,
                body,
                event.message,
                event.table.logical_name,
                event.record_id,
            )
        )
    return out


def _with_query(url: str, pairs: list[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(pairs)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class Dispatcher:
    """Sends committed deliveries in the background (never blocking the write that raised them)."""

    def __init__(self) -> None:
        self.log: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def send(self, items: list[Delivery]) -> None:
        if not items:
            return
        loop = asyncio.get_running_loop()
        for item in items:
            task = loop.create_task(self._deliver(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, item: Delivery) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=TIMEOUT_SECONDS)
        entry: dict[str, Any] = {
            "step": item.step_id,
            "url": urlunsplit(urlsplit(item.url)._replace(query="")),
            "message": item.message,
            "entity": item.table,
            "id": item.record_id,
            "size": len(item.body),
            "size_exceeded": "x-ms-dynamics-msg-size-exceeded" in item.headers,
            "statuses": [],
            "outcome": None,
        }
        self.log.append(entry)
        if len(self.log) > LOG_LIMIT:
            del self.log[: len(self.log) - LOG_LIMIT]
        for _attempt in range(2):
            try:
                response = await self._client.post(item.url, content=item.body, headers=item.headers)
            except httpx.HTTPError as error:
                entry["statuses"].append(None)
                entry["outcome"] = f"failed: {type(error).__name__}"
                return
            entry["statuses"].append(response.status_code)
            if 200 <= response.status_code < 300:
                entry["outcome"] = "succeeded"
                return
            if response.status_code not in RETRY_STATUSES:
                break
        entry["outcome"] = "failed"

    def pending(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def sdk_rows(store: Store, identifier: Any) -> None:
    """sdkmessage rows and the sdkmessagefilter rows of the simulated record tables."""
    tables = load_tables()
    record_tables = ("contact", "account", "lead", "email", "appointment", "task")
    bulk = ("CreateMultiple", "UpdateMultiple", "UpsertMultiple")
    names = (*MESSAGES, "Upsert", "Retrieve", "RetrieveMultiple", *bulk)
    for name in names:
        message_id = identifier(f"sdkmessage:{name}")
        store.put(
            "sdkmessage",
            {
                "sdkmessageid": message_id,
                "name": name,
                "isprivate": False,
                "availability": 0,
                "versionnumber": store.next_version(),
            },
            "sdkmessageid",
        )
        for table_name in record_tables:
            table = tables[table_name]
            if name == "Assign" and table.ownership != "UserOwned":
                continue
            if name == "SetState" and "statecode" not in table.columns:
                continue
            store.put(
                "sdkmessagefilter",
                {
                    "sdkmessagefilterid": identifier(f"sdkmessagefilter:{name}:{table_name}"),
                    "name": f"{name} {table_name}",
                    "sdkmessageid": Ref("sdkmessage", message_id),
                    "primaryobjecttypecode": table_name,
                    "secondaryobjecttypecode": "none",
                    "iscustomprocessingstepallowed": True,
                    "isvisible": True,
                    "versionnumber": store.next_version(),
                },
                "sdkmessagefilterid",
            )
