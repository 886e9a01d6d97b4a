"""Bulk operation messages: CreateMultiple, UpdateMultiple, UpsertMultiple.

"Use bulk operation messages" (power-apps/developer/data-platform/bulk-operations) and the Web API
action reference (CreateMultiple / UpdateMultiple / UpsertMultiple Action):

- ``POST <entityset>/Microsoft.Dynamics.CRM.CreateMultiple`` with ``{"Targets": [...]}``; every item
  must carry ``@odata.type`` (``Microsoft.Dynamics.CRM.<table>``): all records are of the table the
  URL names. CreateMultiple answers 200 with ``{"Ids": [...]}``; UpdateMultiple and UpsertMultiple
  answer 204 No Content (the UpsertMultipleResponse is not returned).
- Standard tables: any error rolls the whole operation back (no partial success). There is no set
  limit on the number of records; the limits are the message size and the time (the simulator's
  execution-time service protection limit applies; the request counts once).
- UpdateMultiple identifies each record by its primary id; a missing record fails the operation
  ("Contact With Ids = <guid> Do Not Exist"). UpsertMultiple identifies a record by ``@odata.id``
  (``contacts(<id>)`` or an alternate key ``contacts(key='value')``) or by its primary id.
- CreateMultiple with a primary id that exists fails with "Cannot insert duplicate key".
- The messages merge with the single-record pipeline: every record goes through the same
  validation, security, change tracking and Create/Update events (webhooks) as a single write.
- Availability: not every standard table supports the messages; the simulator offers them on its
  record tables (contact, account, lead, email, appointment, task; their sdkmessagefilter rows say so)
  and answers other tables as an unknown bound action (404 0x80060888).

Simulator's choices where the docs publish no code: a missing or wrong ``@odata.type``, an empty or
missing ``Targets`` and a record twice in one UpdateMultiple/UpsertMultiple answer 400 0x80048d19.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import TYPE_CHECKING, Any

from simulators.dataverse import errors
from simulators.dataverse.engine import ApiRequest, ApiResponse
from simulators.dataverse.schema import Table, tables_by_entity_set
from simulators.dataverse.security import Caller

if TYPE_CHECKING:
    from simulators.dataverse.engine import Engine

PATH = re.compile(
    r"^(?P<set>[A-Za-z_][A-Za-z0-9_]*)/Microsoft\.Dynamics\.CRM\.(?P<action>CreateMultiple|UpdateMultiple|UpsertMultiple)$"
)
SUPPORTED = frozenset({"contact", "account", "lead", "email", "appointment", "task"})


def run(engine: Engine, request: ApiRequest, caller: Caller) -> ApiResponse | None:
    """Answer a bulk action, or None when the path is not one."""
    match = PATH.match(request.path.strip("/"))
    if match is None:
        return None
    table = tables_by_entity_set().get(match.group("set"))
    action = match.group("action")
    if table is None or table.logical_name not in SUPPORTED:
        raise errors.DataverseError(
            404,
            errors.PROPERTY_NOT_FOUND,
            f"Resource not found for the segment 'Microsoft.Dynamics.CRM.{action}'.",
        )
    if request.method != "POST":
        raise errors.DataverseError(405, errors.BAD_PAYLOAD, f"{action} is an action: use POST.")
    targets = _targets(request.body, table)
    if action == "CreateMultiple":
        ids = [_create(engine, request, table, item, caller) for item in targets]
        body = {
            "@odata.context": f"{request.base_url}/$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse",
            "Ids": ids,
        }
        return ApiResponse(200, {}, body)
    seen: set[str] = set()
    for item in targets:
        record_id, key_values = _identify(engine, table, item, required=action == "UpdateMultiple")
        marker = record_id or json.dumps(key_values, sort_keys=True)
        if marker in seen:
            raise errors.bad_request(f"The record {marker} appears more than once in Targets.")
        seen.add(marker)
        if action == "UpdateMultiple":
            _update(engine, request, table, item, record_id=str(record_id), caller=caller)
        else:
            _upsert(engine, request, table, item, record_id=record_id, key_values=key_values, caller=caller)
    return ApiResponse(204)


def target_names(path: str, body: bytes) -> list[str] | None:
    """``<action> <set>(<id>)`` of each target of a bulk message (the request log's record of what
    it wrote, as ``$batch`` parts are named); ``None`` for other requests or unreadable bodies."""
    match = PATH.match(path.strip("/"))
    table = tables_by_entity_set().get(match.group("set")) if match else None
    if match is None or table is None:
        return None
    try:
        targets = json.loads(body or b"{}").get("Targets")
    except (ValueError, AttributeError):
        return None
    if not isinstance(targets, list):
        return None
    names = []
    for item in targets:
        known = item.get("@odata.id") or item.get(table.primary_id) if isinstance(item, dict) else None
        names.append(f"{match.group('action')} {table.entity_set}({known or ''})")
    return names


def _targets(body: bytes, table: Table) -> list[dict[str, Any]]:
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        raise errors.bad_request("The request body is not valid JSON.") from None
    targets = payload.get("Targets") if isinstance(payload, dict) else None
    if not isinstance(targets, list) or not targets:
        raise errors.bad_request("The 'Targets' parameter is required and must hold at least one record.")
    expected = f"Microsoft.Dynamics.CRM.{table.logical_name}"
    for index, item in enumerate(targets):
        if not isinstance(item, dict):
            raise errors.bad_request(f"Targets[{index}] must be an object.")
        kind = str(item.get("@odata.type", "")).lstrip("#")
        if kind != expected:
            raise errors.bad_request(
                f'Targets[{index}] needs "@odata.type": "{expected}" '
                f"(all records are {table.logical_name} rows)."
            )
    return targets


def _payload(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in {"@odata.type", "@odata.id"}}


def _create(engine: Engine, request: ApiRequest, table: Table, item: dict[str, Any], caller: Caller) -> str:
    payload = _payload(item)
    raw_id = payload.get(table.primary_id)
    record_id = str(raw_id).lower() if raw_id else str(uuid.uuid4())
    if engine.store.get(table.logical_name, record_id) is not None:
        raise errors.DataverseError(412, errors.DUPLICATE_RECORD, "Cannot insert duplicate key.")
    record = engine.write(table, record_id, payload, existing=None, caller=caller, request=request)
    return str(record[table.primary_id])


def _identify(
    engine: Engine, table: Table, item: dict[str, Any], *, required: bool
) -> tuple[str | None, dict[str, Any] | None]:
    odata_id = item.get("@odata.id")
    if isinstance(odata_id, str) and odata_id:
        path = odata_id.split("/api/data/v9.2/", 1)[-1].lstrip("/")
        match = re.match(r"^(?P<set>[A-Za-z_][A-Za-z0-9_]*)\((?P<key>.*)\)$", path)
        if match is None or match.group("set") != table.entity_set:
            raise errors.bad_request(
                f"The @odata.id '{odata_id}' does not address a {table.logical_name} row."
            )
        return engine._resolve_key(table, match.group("key"))
    raw_id = item.get(table.primary_id)
    if raw_id:
        return str(raw_id).lower(), None
    if required:
        raise errors.bad_request(f"Each record of UpdateMultiple needs its {table.primary_id}.")
    return None, None


def _update(
    engine: Engine, request: ApiRequest, table: Table, item: dict[str, Any], *, record_id: str, caller: Caller
) -> None:
    existing = engine.store.get(table.logical_name, record_id)
    if existing is None:
        raise errors.DataverseError(
            404, errors.OBJECT_DOES_NOT_EXIST, f"{table.logical_name} With Ids = {record_id} Do Not Exist"
        )
    engine.security.require(caller, "Write", table, _owner(existing), record_id)
    engine.write(table, record_id, _payload(item), existing=existing, caller=caller, request=request)


def _upsert(
    engine: Engine,
    request: ApiRequest,
    table: Table,
    item: dict[str, Any],
    *,
    record_id: str | None,
    key_values: dict[str, Any] | None,
    caller: Caller,
) -> None:
    payload = _payload(item)
    existing = engine.store.get(table.logical_name, record_id) if record_id else None
    if existing is not None:
        engine.security.require(caller, "Write", table, _owner(existing), record_id)
        engine.write(table, str(record_id), payload, existing=existing, caller=caller, request=request)
        return
    if key_values:
        payload = {**key_values, **payload}
    new_id = record_id or str(payload.get(table.primary_id) or uuid.uuid4()).lower()
    engine.write(table, new_id, payload, existing=None, caller=caller, request=request)


def _owner(record: dict[str, Any]) -> str | None:
    owner = record.get("ownerid")
    return getattr(owner, "id", None)
