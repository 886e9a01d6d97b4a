"""The delta fast path (Graph JSON read through ``GraphJson``) and the msgraph-sdk path agree on every
property of the Graph contract slice, for every item kind the delta reads.

Each sample fills every property the slice gives the resource (nested objects and arrays included,
navigation collections aside), with every choice of enum value in turn; both paths must then produce
the same neutral item, or fail alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from msgraph.generated.models.contact import Contact
from msgraph.generated.models.event import Event
from msgraph.generated.models.message import Message
from msgraph.generated.models.todo_task import TodoTask

from shared.domain.model import OutlookItem
from shared.outlook.convert.common import CRM_ID_PROPERTY_ID, GraphJson, parse_graph_json
from shared.outlook.convert.contacts import contact_item
from shared.outlook.convert.events import appointment_item
from shared.outlook.convert.messages import email_item
from shared.outlook.convert.tasks import task_item
from tests.fixtures.graph_sim import GRAPH_CONTRACT

MAILBOX = "mailbox-1"
# Values a property's schema alone does not make meaningful (free-text time fields, addresses, ids).
_BY_NAME: dict[str, Any] = {
    "dateTime": "2024-05-06T07:08:09.1234567",
    "timeZone": "Pacific Standard Time",
    "originalStartTimeZone": "W. Europe Standard Time",
    "originalEndTimeZone": "W. Europe Standard Time",
    "address": "Someone@Example.com",
    "id": "item-1",
    "singleValueExtendedProperties": [
        {"id": CRM_ID_PROPERTY_ID, "value": "5f2c0d4e-0000-4000-8000-000000000001"}
    ],
    "multiValueExtendedProperties": [],
}
_EXPANDED = {"contact", "message"}  # the delta reads that $expand the stamped CRM id
_COLLECTIONS = {"attachments", "extensions", "instances", "calendar", "checklistItems", "linkedResources"}


@functools.cache
def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = yaml.safe_load(GRAPH_CONTRACT.read_text())["components"]["schemas"]
    return schemas


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = _schemas()[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _properties(schema: dict[str, Any]) -> dict[str, Any]:
    schema = _resolve(schema)
    found: dict[str, Any] = {}
    for part in schema.get("allOf", ()):
        found |= _properties(part)
    return found | schema.get("properties", {})


def _sample(schema: dict[str, Any], choice: int, depth: int = 0) -> Any:
    for key in ("anyOf", "oneOf"):
        if key in schema:
            schema = next(option for option in schema[key] if "$ref" in option or "type" in option)
    schema = _resolve(schema)
    if "enum" in schema:
        values = [value for value in schema["enum"] if value is not None]
        return values[min(choice, len(values) - 1)]
    kind = schema.get("type")
    if kind == "array":
        return [_sample(schema["items"], choice, depth + 1)]
    if kind == "boolean":
        return choice % 2 == 0
    if kind in ("integer", "number"):
        return choice + 1
    if kind == "string":
        return {"date-time": "2024-05-06T07:08:09Z", "date": "2024-05-06"}.get(
            schema.get("format", ""), "text"
        )
    if depth > 4:
        return None
    return {
        name: _BY_NAME[name] if name in _BY_NAME else _sample(prop, choice, depth + 1)
        for name, prop in _properties(schema).items()
        if name not in _COLLECTIONS
    }


def _item(resource: str, choice: int) -> dict[str, Any]:
    sample: dict[str, Any] = _sample({"$ref": f"#/components/schemas/microsoft.graph.{resource}"}, choice)
    return sample


def _outcome(convert: Callable[[], OutlookItem]) -> OutlookItem | str:
    try:
        return convert()
    except (ValueError, KeyError) as error:
        return type(error).__name__


KINDS: dict[str, tuple[Any, Callable[[Any], OutlookItem]]] = {
    "contact": (Contact, lambda model: contact_item(MAILBOX, model)),
    "message": (Message, lambda model: email_item(MAILBOX, model, mailbox_address="someone@example.com")),
    "todoTask": (TodoTask, lambda model: task_item(MAILBOX, model, list_id="list-1")),
    "event": (Event, lambda model: appointment_item(MAILBOX, model)),
}


@pytest.mark.parametrize("choice", range(4))
@pytest.mark.parametrize("resource", sorted(KINDS))
def test_both_paths_agree_on_every_property_of_the_contract_slice(resource: str, choice: int) -> None:
    model, convert = KINDS[resource]
    data = _item(resource, choice)
    data.pop("recurrence", None)  # a series master goes through the SDK on both paths (delta._event)
    if resource in _EXPANDED:
        data["singleValueExtendedProperties"] = _BY_NAME["singleValueExtendedProperties"]
    sdk = _outcome(lambda: convert(parse_graph_json(data, model)))
    fast = _outcome(lambda: convert(GraphJson(data)))
    assert fast == sdk
    if choice == 0:
        assert isinstance(fast, OutlookItem)
        assert fast.item is not None  # the sample reached the converter
        assert (fast.crm_id is not None) == (resource in _EXPANDED)


@pytest.mark.parametrize("resource", sorted(KINDS))
def test_a_removed_item_is_removed_on_both_paths(resource: str) -> None:
    model, convert = KINDS[resource]
    data = {"id": "item-1", "@removed": {"reason": "deleted"}}
    assert convert(GraphJson(data)) == convert(parse_graph_json(data, model))
    assert convert(GraphJson(data)).removed
