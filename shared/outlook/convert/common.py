"""What every item kind's conversion shares: Graph JSON (de)serialization, addresses, bodies, the
Graph-generic envelope of an :class:`~shared.domain.model.OutlookItem`, and the stamped CRM id.

The CRM id stamped on items is a single-value extended property (learn.microsoft.com/graph/api/
resources/singlevaluelegacyextendedproperty, "String {GUID} Name <name>" form); it is read here
and written by :mod:`shared.outlook.writers`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from kiota_abstractions.serialization import Parsable, ParsableFactory
from kiota_serialization_json.json_parse_node import JsonParseNode
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
from kiota_serialization_json.json_serialization_writer_factory import JsonSerializationWriterFactory
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.email_address import EmailAddress as GraphEmailAddress
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.models.single_value_legacy_extended_property import SingleValueLegacyExtendedProperty

from shared.domain.model import EmailAddress, ItemKind, OutlookItem

# The one extended property crmsync stamps: the CRM record id. The GUID is crmsync's own
# property-set id; it never changes, or stamped items would lose their link.
CRM_ID_PROPERTY_ID = "String {5c7d3a0e-2b8f-4e61-9a4d-c3f1e2b7a915} Name crmsync.crmid"
# Set (value "crm") in the creating POST of an item crmsync created from a CRM record: only such an
# item may be removed when its record leaves the user's synchronization filter.
ORIGIN_PROPERTY_ID = "String {5c7d3a0e-2b8f-4e61-9a4d-c3f1e2b7a915} Name crmsync.origin"
FROM_CRM = "crm"
TODO_APPLICATION = "crmsync"

_JSON_PARSER = JsonParseNodeFactory()
_JSON_WRITER = JsonSerializationWriterFactory()
_P = TypeVar("_P", bound=Parsable)


def graph_json(value: Parsable) -> dict[str, Any]:
    """A Graph model serialised with kiota's JSON writer, as a plain dict."""
    writer = _JSON_WRITER.get_serialization_writer("application/json")
    writer.write_object_value(None, value)
    parsed: dict[str, Any] = json.loads(writer.get_serialized_content())
    return parsed


def parse_graph_json(payload: bytes | str | dict[str, Any], model: ParsableFactory[_P]) -> _P:
    """Parse Graph JSON into an msgraph-sdk model exactly as the SDK parses a response."""
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    parsed: _P | None = _JSON_PARSER.get_root_parse_node("application/json", payload).get_object_value(model)
    if parsed is None:
        raise ValueError("empty Graph payload")
    return parsed


# The Graph properties read as datetimes (Edm.DateTimeOffset) that the converters use; the rest stay
# as Graph sends them (DateTimeTimeZone.dateTime is a string in msgraph-sdk too).
_DATETIMES = frozenset(
    (
        "sentDateTime",
        "receivedDateTime",
        "birthday",
        "originalStart",
        "createdDateTime",
        "lastModifiedDateTime",
    )
)
_KEYS = {"from_": "from", "i_cal_u_id": "iCalUId"}


@functools.cache
def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return _KEYS.get(name) or head + "".join(part[:1].upper() + part[1:] for part in rest)


class GraphJson:
    """A Graph JSON object read the way the converters read its msgraph-sdk model (``contact.given_name``,
    ``message.from_``, ``additional_data``): the hot delta path converts a page's JSON straight into the
    neutral model without building an object graph per item. Enums stay strings (:func:`enum_value` reads
    both); datetimes are parsed by kiota's own JSON parse node, so both paths agree
    (``tests/outlook/test_json_fast_path.py``)."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def has(self, key: str) -> bool:
        return self._data.get(key) is not None

    def to_model(self, model: ParsableFactory[_P]) -> _P:
        """The msgraph-sdk model of this object, for what needs the SDK's own form."""
        return parse_graph_json(self._data, model)

    @property
    def additional_data(self) -> dict[str, Any]:
        return {key: value for key, value in self._data.items() if key.startswith("@")}

    def __getattr__(self, name: str) -> Any:
        key = _camel(name)
        value = self._data.get(key)
        if value is None:
            return None
        if key in _DATETIMES:
            return JsonParseNode(value).get_datetime_value()
        return _view(value)


def _view(value: Any) -> Any:
    if isinstance(value, dict):
        return GraphJson(value)
    if isinstance(value, list):
        return [_view(element) for element in value]
    return value


def enum_value(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def email_address_of(recipient: Recipient | GraphEmailAddress | GraphJson | None) -> EmailAddress | None:
    is_recipient = isinstance(recipient, Recipient) or (
        isinstance(recipient, GraphJson) and recipient.has("emailAddress")
    )
    email: Any = getattr(recipient, "email_address", None) if is_recipient else recipient
    if email is None or not email.address:
        return None
    return EmailAddress(address=email.address, name=email.name or None)


def email_addresses_of(
    recipients: Iterable[Recipient | GraphEmailAddress | GraphJson] | None,
) -> tuple[EmailAddress, ...]:
    found = (email_address_of(recipient) for recipient in recipients or ())
    return tuple(address for address in found if address is not None)


def graph_address(address: EmailAddress) -> GraphEmailAddress:
    return GraphEmailAddress(address=address.address, name=address.name)


def first(values: Sequence[str] | None) -> str | None:
    return values[0] if values else None


def text_body(content: str | None) -> ItemBody:
    """A plain-text body; an empty one when there is none, so an update clears the old text."""
    return ItemBody(content_type=BodyType.Text, content=content or "")


def crm_id_of(properties: Iterable[SingleValueLegacyExtendedProperty] | None) -> str | None:
    """The stamped CRM id among an item's expanded single-value extended properties."""
    for prop in properties or ():
        if prop.id and prop.id.casefold() == CRM_ID_PROPERTY_ID.casefold():
            return prop.value or None
    return None


def created_from_crm(properties: Iterable[SingleValueLegacyExtendedProperty] | None) -> bool:
    """Whether an item's expanded extended properties say crmsync created it from a CRM record."""
    return any(
        (prop.id or "").casefold() == ORIGIN_PROPERTY_ID.casefold() and prop.value == FROM_CRM
        for prop in properties or ()
    )


def is_removed(model: Any) -> bool:
    """Delta responses mark deleted (or moved-out) items with an ``@removed`` annotation."""
    return "@removed" in (getattr(model, "additional_data", None) or {})


def item_envelope(mailbox_id: str, model: Any, kind: ItemKind) -> dict[str, Any]:
    """The Graph-generic part of an :class:`OutlookItem`: ids, change key, folder, categories."""
    if not model.id:
        raise ValueError(f"Graph {kind.value} without an id")
    return {
        "mailbox_id": mailbox_id,
        "item_id": model.id,
        "kind": kind,
        "change_key": getattr(model, "change_key", None),
        "folder_id": getattr(model, "parent_folder_id", None),
        "categories": tuple(getattr(model, "categories", None) or ()),
        "crm_id": crm_id_of(getattr(model, "single_value_extended_properties", None)),
    }


def removed_item(mailbox_id: str, model: Any, kind: ItemKind) -> OutlookItem:
    if not model.id:
        raise ValueError(f"removed Graph {kind.value} without an id")
    return OutlookItem(mailbox_id=mailbox_id, item_id=model.id, kind=kind, removed=True)
