"""Dataverse Web API requests and answers as data: record paths, JSON payloads, ids and ETags read back.

Pure (no I/O). Microsoft documents each shape (powerapps-docs, learn.microsoft.com/power-apps
/developer/data-platform/...): webapi/create-entity-web-api (``@odata.bind``, client-chosen ids),
webapi/update-delete-entities-using-web-api (PATCH upsert, ``Prefer: return=representation``),
webapi/perform-conditional-operations-using-web-api (``If-Match`` / ``If-None-Match``),
use-alternate-key-reference-record (``/<set>(key1='v',key2=2)``).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from shared.crm.errors import CrmError
from shared.crm.port import Delete, FieldValue, KeyValue, Operation, Party, RecordRef, Upsert
from shared.crm.tables import bind_annotation, table_info

RETURN_REPRESENTATION = "return=representation"
_LOOKUP_TYPE = "Microsoft.Dynamics.CRM.lookuplogicalname"
# Lookups read as _<column>_value; this annotation names the target table of polymorphic ones
# (powerapps-docs: "Query data using the Web API", Lookup property data).
LOOKUP_ANNOTATIONS = f'odata.include-annotations="{_LOOKUP_TYPE}"'


def lookup_ref(row: Mapping[str, Any], column: str) -> RecordRef | None:
    """The record a lookup column of a read row points at (``_<column>_value`` + its target table)."""
    value = row.get(f"_{column}_value")
    table = row.get(f"_{column}_value@{_LOOKUP_TYPE}")
    if not value or not table:
        return None
    return RecordRef(str(table), uuid.UUID(str(value)))


class Request:
    """One Web API request as built from an operation; sent alone or as a part of a ``$batch``."""

    __slots__ = ("body", "headers", "method", "path")

    def __init__(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None, body: Any = None
    ) -> None:
        self.method = method
        self.path = path  # relative to the Web API root
        self.headers = dict(headers or {})
        self.body = body


def _json_value(value: FieldValue) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("Dataverse date-times must be timezone-aware")
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date | uuid.UUID):
        return str(value)
    return value


def _key_segment(key: Mapping[str, KeyValue]) -> str:
    """``key1='v',key2=2``: string values quoted with ``'`` doubled, then percent-encoded."""
    parts = []
    for name, value in key.items():
        literal = str(value) if isinstance(value, int) else "'" + value.replace("'", "''") + "'"
        parts.append(f"{name}={quote(literal, safe=chr(39))}")
    return ",".join(parts)


def _record_path(table: str, record_id: uuid.UUID | None, key: Mapping[str, KeyValue] | None = None) -> str:
    entity_set = table_info(table).entity_set
    return f"{entity_set}({record_id if record_id is not None else _key_segment(key or {})})"


def _party_payload(party: Party) -> dict[str, Any]:
    row: dict[str, Any] = {"participationtypemask": int(party.participation)}
    if party.ref is not None:
        name, value = bind_annotation("activityparty", "partyid", party.ref.table, party.ref.id)
        row[name] = value
    if party.address:
        row["addressused"] = party.address
    return row


def record_payload(
    table: str, fields: Mapping[str, FieldValue], parties: Sequence[Party] = ()
) -> dict[str, Any]:
    """The JSON body for a create/update: columns, ``@odata.bind`` lookups and the party list."""
    body: dict[str, Any] = {}
    for column, value in fields.items():
        if isinstance(value, RecordRef):
            name, path = bind_annotation(table, column, value.table, value.id)
            body[name] = path
        else:
            body[column] = _json_value(value)
    if parties:
        collection = table_info(table).party_collection
        if collection is None:
            raise ValueError(f"{table} records have no activity parties")
        body[collection] = [_party_payload(party) for party in parties]
    return body


def upsert_request(op: Upsert) -> Request:
    headers = {"Prefer": RETURN_REPRESENTATION}
    if op.if_match is not None:
        headers["If-Match"] = op.if_match
    if op.if_none_match:
        headers["If-None-Match"] = "*"
    select = f"?$select={table_info(op.table).primary_id}"
    return Request(
        "PATCH",
        _record_path(op.table, op.id, op.key) + select,
        headers=headers,
        body=record_payload(op.table, op.fields, op.parties),
    )


def delete_request(op: Delete) -> Request:
    headers = {"If-Match": op.if_match} if op.if_match else {}
    return Request("DELETE", _record_path(op.table, op.id), headers=headers)


def operation_request(op: Operation) -> Request:
    return upsert_request(op) if isinstance(op, Upsert) else delete_request(op)


def read_request(table: str, record_id: uuid.UUID, select: Sequence[str] | None) -> Request:
    """A GET of one record with its lookups' target tables annotated; the same alone or in a batch."""
    query = f"?$select={','.join(select)}" if select else ""
    return Request("GET", _record_path(table, record_id) + query, headers={"Prefer": LOOKUP_ANNOTATIONS})


def entity_id(headers: Mapping[str, str], body: Any, table: str) -> uuid.UUID | None:
    """The record id from the body's primary id column or the ``OData-EntityId`` header."""
    primary_id = table_info(table).primary_id
    if isinstance(body, Mapping) and isinstance(body.get(primary_id), str):
        return uuid.UUID(body[primary_id])
    odata_entity_id = headers.get("odata-entityid")  # httpx and decoded batch headers: lower-case works
    if odata_entity_id and odata_entity_id.endswith(")") and "(" in odata_entity_id:
        inner = odata_entity_id.rsplit("(", 1)[1][:-1]
        try:
            return uuid.UUID(inner)
        except ValueError:
            return None
    return None


def response_etag(headers: Mapping[str, str], body: Any) -> str | None:
    if isinstance(body, Mapping) and isinstance(body.get("@odata.etag"), str):
        return str(body["@odata.etag"])
    return headers.get("etag")


def json_body(content: bytes) -> Any:
    try:
        return json.loads(content) if content.strip() else None
    except ValueError:
        return None


def record_body(status: int, content: bytes) -> dict[str, Any]:
    """A read record's JSON object (a top-level response or a ``$batch`` part)."""
    body = json_body(content)
    if not isinstance(body, dict):
        raise CrmError("Dataverse returned a record that is not a JSON object", status=status)
    return body
