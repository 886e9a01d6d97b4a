"""Table definitions through the Web API: ``EntityDefinitions`` and their ``Attributes``.

"Query table definitions using the Web API" (learn.microsoft.com/power-apps/developer/data-platform/
webapi/query-metadata-web-api) and "Retrieve table definitions by name or MetadataId" (webapi/
retrieve-metadata-name-metadataid):

- ``GET EntityDefinitions?$select=LogicalName,EntitySetName,PrimaryIdAttribute&$filter=LogicalName eq
  'contact'`` -> ``{"value": [EntityMetadata]}``; ``$filter`` takes ``eq`` comparisons joined by
  ``and`` (what clients use to find one table); anything else is refused with 400.
- ``GET EntityDefinitions(LogicalName='contact')`` or ``EntityDefinitions(<MetadataId>)`` -> one
  EntityMetadata; ``.../Attributes`` -> its AttributeMetadata, ``.../Attributes(LogicalName='x')``
  one of them, and a type cast such as ``.../Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata``
  only those of that type, with ``$expand=OptionSet`` (or ``OptionSet($select=Options)``) giving
  each option's ``Value`` and ``Label`` (``LocalizedLabels``, ``UserLocalizedLabel``, language 1033).

The definitions are the simulator's own schema (tables/*.json); MetadataIds are stable per name.
Reading definitions needs no table privilege, as in Dataverse.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from simulators.dataverse import errors
from simulators.dataverse.schema import LOOKUP_TYPES, Column, Table, load_tables

_NAMESPACE = uuid.UUID("5b0e1c3a-0a11-4c0e-9a11-0000000d0001")
ATTRIBUTE_TYPES = {
    "Lookup": "LookupAttributeMetadata",
    "Customer": "LookupAttributeMetadata",
    "Owner": "LookupAttributeMetadata",
    "Picklist": "PicklistAttributeMetadata",
    "State": "StateAttributeMetadata",
    "Status": "StatusAttributeMetadata",
    "Boolean": "BooleanAttributeMetadata",
    "String": "StringAttributeMetadata",
    "Memo": "MemoAttributeMetadata",
    "Integer": "IntegerAttributeMetadata",
    "BigInt": "BigIntAttributeMetadata",
    "Double": "DoubleAttributeMetadata",
    "Decimal": "DecimalAttributeMetadata",
    "Money": "MoneyAttributeMetadata",
    "DateTime": "DateTimeAttributeMetadata",
    "Uniqueidentifier": "UniqueIdentifierAttributeMetadata",
    "EntityName": "EntityNameAttributeMetadata",
    "PartyList": "LookupAttributeMetadata",
}
OPTION_TYPES = frozenset({"Picklist", "State", "Status"})
_TERM = re.compile(r"^\(?\s*(?P<name>\w+)\s+eq\s+(?P<value>'(?:[^']|'')*'|true|false)\s*\)?$", re.IGNORECASE)


def metadata_id(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, ":".join(parts)))


def matches(path: str) -> bool:
    return path == "EntityDefinitions" or path.startswith(("EntityDefinitions(", "EntityDefinitions/"))


def handle(method: str, path: str, query: dict[str, str], base_url: str) -> tuple[int, dict[str, Any]]:
    """(status, body) of a GET on the definitions; other methods are refused."""
    if method != "GET":
        raise errors.DataverseError(
            405, errors.BAD_PAYLOAD, "The simulator's table definitions are read-only."
        )
    for name in query:
        if name not in {"$select", "$filter", "$expand"}:
            raise errors.unsupported_option(name)
    match = re.match(
        r"^EntityDefinitions(?:\((?P<key>[^)]*)\))?(?:/Attributes(?:\((?P<attribute>[^)]*)\))?"
        r"(?:/Microsoft\.Dynamics\.CRM\.(?P<cast>\w+))?)?$",
        path,
    )
    attributes = "/Attributes" in path
    if match is None:
        raise errors.DataverseError(
            404, errors.RESOURCE_NOT_FOUND, f"Resource not found for the segment '{path}'."
        )
    key = match.group("key")
    select = _select(query.get("$select"))
    context = f"{base_url}/$metadata#EntityDefinitions"
    if key is None:
        if attributes:
            raise errors.bad_request("Address one table: EntityDefinitions(LogicalName='<name>')/Attributes.")
        tables = [t for t in load_tables().values() if _keep(t, query.get("$filter"))]
        return 200, {"@odata.context": context, "value": [_pick(entity(t), select) for t in tables]}
    table = _table(key)
    if not attributes:
        return 200, {"@odata.context": f"{context}/$entity", **_pick(entity(table), select)}
    cast = match.group("cast")
    wanted_type = None
    if cast is not None:
        known = set(ATTRIBUTE_TYPES.values()) | {"AttributeMetadata", "EnumAttributeMetadata"}
        if cast not in known:
            raise errors.bad_request(f"The type cast '{cast}' is not an AttributeMetadata type.")
        wanted_type = cast
    expand = query.get("$expand")
    option_select: list[str] | None = None
    if expand:
        name, _, inner = expand.partition("(")
        if name.strip() != "OptionSet":
            raise errors.unknown_property(name.strip(), "AttributeMetadata")
        inner_select = re.search(r"\$select=([^;)]*)", inner)
        option_select = _select(inner_select.group(1)) if inner_select else None
    columns = [c for c in table.columns.values() if _is(c, wanted_type)]
    attribute_key = match.group("attribute")
    if attribute_key is not None:
        logical = _key_name(attribute_key)
        found = [
            c for c in columns if c.name == logical or metadata_id(table.logical_name, c.name) == logical
        ]
        if not found:
            raise errors.DataverseError(
                404,
                errors.OBJECT_DOES_NOT_EXIST,
                f"Could not find attribute '{attribute_key}' on {table.logical_name}.",
            )
        columns = found
    rows = []
    for column in columns:
        row = _pick(attribute(table, column), select)
        if expand:
            if column.type not in OPTION_TYPES and column.type != "Boolean":
                raise errors.bad_request(f"Could not find a property named 'OptionSet' on '{column.name}'.")
            row["OptionSet"] = _pick(option_set(table, column), option_select)
        rows.append(row)
    suffix = f"{context}('{table.logical_name}')/Attributes"
    if cast:
        suffix += f"/Microsoft.Dynamics.CRM.{cast}"
    if attribute_key is not None:
        return 200, {"@odata.context": f"{suffix}/$entity", **rows[0]}
    return 200, {"@odata.context": suffix, "value": rows}


def entity(table: Table) -> dict[str, Any]:
    return {
        "@odata.type": "#Microsoft.Dynamics.CRM.EntityMetadata",
        "MetadataId": metadata_id(table.logical_name),
        "LogicalName": table.logical_name,
        "SchemaName": table.schema_name,
        "EntitySetName": table.entity_set,
        "PrimaryIdAttribute": table.primary_id,
        "PrimaryNameAttribute": table.primary_name,
        "OwnershipType": table.ownership,
        "IsActivity": table.logical_name in {"email", "appointment", "task"},
        "IsPrivate": False,
        "IsCustomEntity": False,
    }


def attribute(table: Table, column: Column) -> dict[str, Any]:
    type_name = ATTRIBUTE_TYPES.get(column.type, "AttributeMetadata")
    out: dict[str, Any] = {
        "@odata.type": f"#Microsoft.Dynamics.CRM.{type_name}",
        "MetadataId": metadata_id(table.logical_name, column.name),
        "LogicalName": column.name,
        "SchemaName": column.schema_name or column.name,
        "EntityLogicalName": table.logical_name,
        "AttributeType": column.type,
        "AttributeTypeName": {"Value": f"{column.type}Type"},
        "IsValidForCreate": column.writable,
        "IsValidForUpdate": column.writable,
        "IsValidForRead": True,
    }
    if column.max_length is not None:
        out["MaxLength"] = column.max_length
    if column.type in LOOKUP_TYPES:
        out["Targets"] = list(column.targets)
    return out


def option_set(table: Table, column: Column) -> dict[str, Any]:
    values = sorted(column.options) if column.type != "Boolean" else [0, 1]
    labels = dict(column.labels)
    if column.type == "Boolean":
        labels = {0: labels.get(0, "No"), 1: labels.get(1, "Yes")}
    return {
        "MetadataId": metadata_id(table.logical_name, column.name, "optionset"),
        "Name": f"{table.logical_name}_{column.name}",
        "IsGlobal": False,
        "OptionSetType": column.type if column.type != "Boolean" else "Boolean",
        "Options": [{"Value": value, "Label": _label(labels.get(value, str(value)))} for value in values],
    }


def _label(text: str) -> dict[str, Any]:
    localized = {"Label": text, "LanguageCode": 1033, "IsManaged": True}
    return {"LocalizedLabels": [localized], "UserLocalizedLabel": localized}


def _is(column: Column, wanted: str | None) -> bool:
    """Whether ``column`` is of the cast's type (no cast, or AttributeMetadata: every column)."""
    if wanted in {None, "AttributeMetadata"}:
        return True
    if wanted == "EnumAttributeMetadata":
        return column.type in OPTION_TYPES
    return column.type != "PartyList" and ATTRIBUTE_TYPES.get(column.type) == wanted


def _key_name(key: str) -> str:
    key = key.strip()
    if key.lower().startswith("logicalname="):
        value = key.split("=", 1)[1].strip()
        if not (value.startswith("'") and value.endswith("'")):
            raise errors.bad_request(f"Invalid key segment '({key})'.")
        return value[1:-1].replace("''", "'")
    return key.lower()


def _table(key: str) -> Table:
    name = _key_name(key)
    for table in load_tables().values():
        if name in {table.logical_name, metadata_id(table.logical_name)}:
            return table
    raise errors.DataverseError(
        404,
        errors.OBJECT_DOES_NOT_EXIST,
        f"Could not find an entity with key '{key}'.",
    )


def _select(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _pick(row: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    if select is None:
        return row
    unknown = [name for name in select if name not in row and name != "OptionSet"]
    if unknown:
        raise errors.unknown_property(unknown[0], "EntityMetadata")
    keep = {"MetadataId", "@odata.type", *select}
    return {k: v for k, v in row.items() if k in keep}


def _keep(table: Table, text: str | None) -> bool:
    """``$filter`` of ``Name eq 'value'`` terms joined by ``and``."""
    if not text:
        return True
    row = entity(table)
    for term in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        match = _TERM.match(term.strip())
        if match is None or match.group("name") not in row:
            raise errors.bad_request(
                f"The simulator's EntityDefinitions $filter takes 'Property eq value' terms joined by "
                f"'and'; '{term}' is not one."
            )
        raw = match.group("value")
        value: Any = raw[1:-1].replace("''", "'") if raw.startswith("'") else raw.lower() == "true"
        actual = row[match.group("name")]
        if isinstance(actual, str) and isinstance(value, str):
            if actual.lower() != value.lower():
                return False
        elif actual != value:
            return False
    return True
