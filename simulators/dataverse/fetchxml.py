"""FetchXML queries: ``GET <entityset>?fetchXml=<url-encoded fetch>``.

Follows "Query data using FetchXml" (learn.microsoft.com/power-apps/developer/data-platform/
fetchxml/overview), "Filter rows using FetchXml" (fetchxml/filter-rows), "Join tables using
FetchXml" (fetchxml/join-tables), "Order rows" (fetchxml/order-rows), "Page results"
(fetchxml/page-results) and the condition operator reference (fetchxml/reference/operators):

- ``fetch`` (``top``, ``count``, ``page``, ``distinct``) with one ``entity`` whose name is the
  entity set's table; ``attribute`` / ``all-attributes``; ``order`` (``attribute``, ``descending``).
- ``filter`` (``type`` and/or, nested) of ``condition`` elements with the operators eq, ne, gt,
  ge, lt, le, null, not-null, in / not-in (``<value>`` children), eq-userid / ne-userid (the user
  the query runs as: the impersonated user under CallerObjectId / MSCRMCallerID), like / not-like
  (``%`` and ``_`` wildcards, case-insensitive), on-or-after / on-or-before (date part; the
  simulator's users are all in UTC, so the user's local date is the UTC date).
- ``link-entity`` (``name``, ``from``, ``to``, ``link-type`` inner or outer, ``alias``) with its
  own attributes and filter; linked attributes come back as ``<alias>.<attribute>``, one row per
  match, as a SQL join does; ``distinct="true"`` folds identical rows.

The query runs under the caller's read privileges (rows of the entity and of every linked table the
caller may not read are left out). Rows come back in the shape of a normal Web API query. XML that
does not parse, or names an unknown table, column or operator, answers 400 with the "Web service
error codes" of errors.py (InvalidXml, QueryBuilderNoEntity, InvalidArgument, and 0x80060888 for an
unknown column).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simulators.dataverse import errors
from simulators.dataverse.query import comparable, normalize_datetime
from simulators.dataverse.schema import LOOKUP_TYPES, Column, Table, load_tables
from simulators.dataverse.store import Record, Ref

Row = dict[str, Record]  # alias ("" = the main entity) -> record
Test = Callable[[Record], bool]
NUMBER_TYPES = frozenset({"Integer", "BigInt", "Picklist", "State", "Status"})
DECIMAL_TYPES = frozenset({"Double", "Decimal", "Money"})
NO_VALUE = frozenset({"null", "not-null", "eq-userid", "ne-userid"})
OPERATORS = frozenset(
    {
        "eq",
        "ne",
        "neq",
        "gt",
        "ge",
        "lt",
        "le",
        "in",
        "not-in",
        "like",
        "not-like",
        "on-or-after",
        "on-or-before",
    }
    | NO_VALUE
)


@dataclass
class Link:
    table: Table
    alias: str
    from_column: str
    to_column: str
    parent: str
    inner: bool
    attributes: list[str] | None
    test: Test | None
    links: list[Link] = field(default_factory=list)


@dataclass
class Fetch:
    """A parsed fetch: the entity, its columns, filter, order, links and paging."""

    table: Table
    attributes: list[str] | None
    test: Test | None
    order: list[tuple[str, bool]]
    links: list[Link]
    top: int | None
    count: int | None
    page: int
    distinct: bool

    def linked_columns(self) -> list[tuple[str, Table, str]]:
        """(alias, table, column) of every linked attribute to return."""
        out: list[tuple[str, Table, str]] = []
        stack = list(self.links)
        while stack:
            link = stack.pop(0)
            for column in link.attributes or ():
                out.append((link.alias, link.table, column))
            stack.extend(link.links)
        return out


def invalid(message: str) -> errors.DataverseError:
    return errors.bad_request(message, errors.INVALID_FETCH_XML)


def parse(text: str, table: Table, user_id: str) -> Fetch:
    """Parse ``text`` for a query on ``table`` run as ``user_id`` (for eq-userid / ne-userid)."""
    if "<!" in text.replace("<![CDATA[", ""):
        # No DTDs or entity declarations: a fetch never needs one (and they are the XML attacks).
        raise errors.bad_request("Invalid XML: declarations are not allowed.", errors.INVALID_XML)
    try:
        root = ET.fromstring(text)  # noqa: S314 - DTDs and entities refused above
    except ET.ParseError as error:
        raise errors.bad_request(f"Invalid XML: {error}", errors.INVALID_XML) from None
    if root.tag != "fetch":
        raise invalid(f"The root element of a FetchXml query is 'fetch', not '{root.tag}'.")
    entities = root.findall("entity")
    if len(entities) != 1 or not entities[0].get("name"):
        raise errors.bad_request(
            "Entity Name was not specified in FetchXml String.", errors.QUERY_BUILDER_NO_ENTITY
        )
    entity = entities[0]
    if entity.get("name") != table.logical_name:
        raise invalid(
            f"The entity name '{entity.get('name')}' of the FetchXml does not match the entity set "
            f"'{table.entity_set}' of the request."
        )
    top, count = _int_attr(root, "top"), _int_attr(root, "count")
    if top is not None and count is not None:
        raise invalid("The top attribute can't be specified with paging attribute count.")
    parser = _Parser(user_id)
    attributes, test, order, links = parser.element(entity, table, "")
    return Fetch(
        table=table,
        attributes=attributes,
        test=test,
        order=order,
        links=links,
        top=top,
        count=count,
        page=_int_attr(root, "page") or 1,
        distinct=(root.get("distinct") or "").lower() == "true",
    )


def _int_attr(element: ET.Element, name: str) -> int | None:
    raw = element.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise invalid(f"The '{name}' attribute of fetch must be a positive integer, not '{raw}'.")
    return int(raw)


def _column(table: Table, name: str | None) -> Column:
    column = table.columns.get(name or "")
    if column is None or column.type == "PartyList":
        raise errors.unknown_property(str(name), table.logical_name)
    return column


class _Parser:
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id.lower()
        self.aliases: set[str] = set()

    def element(
        self, node: ET.Element, table: Table, alias: str
    ) -> tuple[list[str] | None, Test | None, list[tuple[str, bool]], list[Link]]:
        attributes: list[str] | None = []
        tests: list[Test] = []
        order: list[tuple[str, bool]] = []
        links: list[Link] = []
        for child in node:
            if child.tag == "attribute":
                if attributes is not None:
                    attributes.append(_column(table, child.get("name")).name)
            elif child.tag == "all-attributes":
                attributes = None
            elif child.tag == "filter":
                tests.append(self.filter(child, table))
            elif child.tag == "order":
                descending = (child.get("descending") or "").lower() == "true"
                order.append((_column(table, child.get("attribute")).name, descending))
            elif child.tag == "link-entity":
                links.append(self.link(child, table, alias))
            else:
                raise invalid(f"The element '{child.tag}' is not supported in '{node.tag}'.")
        test = _all(tests) if tests else None
        return attributes, test, order, links

    def link(self, node: ET.Element, parent: Table, parent_alias: str) -> Link:
        name = node.get("name") or ""
        table = load_tables().get(name)
        if table is None:
            raise errors.bad_request(
                f"The entity with a name = '{name}' with namemapping = 'Logical' was not found in the "
                "MetadataCache.",
                errors.QUERY_BUILDER_NO_ENTITY,
            )
        link_type = (node.get("link-type") or "inner").lower()
        if link_type not in {"inner", "outer"}:
            raise invalid(f"The link-type '{link_type}' is not supported.")
        alias = node.get("alias") or f"{name}{len(self.aliases) + 1}"
        if alias in self.aliases or not alias:
            raise invalid(f"The alias '{alias}' is used twice.")
        self.aliases.add(alias)
        from_column = _column(table, node.get("from")).name
        to_column = _column(parent, node.get("to")).name
        attributes, test, order, links = self.element(node, table, alias)
        if order:
            raise invalid("order inside link-entity is not supported by the simulator.")
        return Link(
            table, alias, from_column, to_column, parent_alias, link_type == "inner", attributes, test, links
        )

    def filter(self, node: ET.Element, table: Table) -> Test:
        kind = (node.get("type") or "and").lower()
        if kind not in {"and", "or"}:
            raise invalid(f"The filter type '{kind}' is not valid; use 'and' or 'or'.")
        tests: list[Test] = []
        for child in node:
            if child.tag == "condition":
                tests.append(self.condition(child, table))
            elif child.tag == "filter":
                tests.append(self.filter(child, table))
            else:
                raise invalid(f"The element '{child.tag}' is not supported in 'filter'.")
        if not tests:
            return lambda record: True
        return _all(tests) if kind == "and" else _any(tests)

    def condition(self, node: ET.Element, table: Table) -> Test:
        if node.get("entityname"):
            raise invalid("Conditions on a linked entity's column (entityname) are not supported.")
        column = _column(table, node.get("attribute"))
        operator = (node.get("operator") or "").lower()
        if operator not in OPERATORS:
            raise invalid(f"The condition operator '{operator}' is not valid or not supported.")
        name = column.name
        if operator in NO_VALUE:
            if operator == "null":
                return lambda record: record.get(name) is None
            if operator == "not-null":
                return lambda record: record.get(name) is not None
            if column.type not in LOOKUP_TYPES:
                raise invalid(f"The operator '{operator}' needs a lookup column; '{name}' is not one.")
            me = self.user_id
            if operator == "eq-userid":
                return lambda record: comparable(record.get(name)) == me
            return lambda record: record.get(name) is not None and comparable(record.get(name)) != me
        if operator in {"in", "not-in"}:
            raw = [value.text or "" for value in node.findall("value")]
            if not raw:
                raise invalid(f"The operator '{operator}' needs <value> elements.")
            values = {_typed(column, v) for v in raw}
            if operator == "in":
                return lambda record: comparable(record.get(name)) in values
            return lambda record: record.get(name) is not None and comparable(record.get(name)) not in values
        text = node.get("value")
        if text is None:
            values_nodes = node.findall("value")
            text = values_nodes[0].text if len(values_nodes) == 1 else None
        if text is None:
            raise invalid(f"The condition on '{name}' with operator '{operator}' needs a value.")
        if operator in {"like", "not-like"}:
            pattern = _like(text)
            positive = operator == "like"
            return lambda record: (
                isinstance(record.get(name), str) and bool(pattern.fullmatch(record[name])) == positive
            )
        if operator in {"on-or-after", "on-or-before"}:
            if column.type != "DateTime":
                raise invalid(f"The operator '{operator}' needs a date column; '{name}' is not one.")
            day = _date(text)
            after = operator == "on-or-after"
            return lambda record: (
                isinstance(record.get(name), str)
                and (record[name][:10] >= day if after else record[name][:10] <= day)
            )
        literal = _typed(column, text)
        return _compare(name, "ne" if operator == "neq" else operator, literal)


def _compare(name: str, operator: str, literal: Any) -> Test:
    def test(record: Record) -> bool:
        value = comparable(record.get(name))
        if value is None:
            return False  # SQL: a comparison with null is never true (ne included)
        try:
            if operator == "eq":
                return bool(value == literal)
            if operator == "ne":
                return bool(value != literal)
            if operator == "gt":
                return bool(value > literal)
            if operator == "ge":
                return bool(value >= literal)
            if operator == "lt":
                return bool(value < literal)
            return bool(value <= literal)
        except TypeError:
            return False

    return test


def _typed(column: Column, text: str) -> Any:
    """A condition value as the column's type compares it."""
    text = text.strip()
    try:
        if column.type in NUMBER_TYPES:
            return int(text)
        if column.type in DECIMAL_TYPES:
            return float(text)
        if column.type == "Boolean":
            if text.lower() not in {"0", "1", "true", "false"}:
                raise ValueError(text)
            return text.lower() in {"1", "true"}
        if column.type == "DateTime":
            return normalize_datetime(text)
    except ValueError:
        raise invalid(
            f"The value '{text}' is not valid for the column '{column.name}' ({column.type})."
        ) from None
    if column.type in LOOKUP_TYPES or column.type == "Uniqueidentifier":
        return text.strip("{}").lower()
    return text.lower()


def _date(text: str) -> str:
    try:
        return normalize_datetime(text.strip())[:10]
    except ValueError:
        raise invalid(f"The value '{text}' is not a date.") from None


def _like(text: str) -> re.Pattern[str]:
    parts = []
    for char in text:
        parts.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _all(tests: list[Test]) -> Test:
    return lambda record: all(test(record) for test in tests)


def _any(tests: list[Test]) -> Test:
    return lambda record: any(test(record) for test in tests)


def join(
    fetch: Fetch,
    records: list[Record],
    linked: Callable[[Link, Record], list[Record]],
) -> list[Row]:
    """Rows of the query: each main record joined with its links (``linked`` finds a link's readable
    rows for a parent record)."""
    rows: list[Row] = [{"": record} for record in records if fetch.test is None or fetch.test(record)]
    for link in _flatten(fetch.links):
        joined: list[Row] = []
        for row in rows:
            parent = row.get(link.parent)
            matches = (
                [r for r in linked(link, parent) if link.test is None or link.test(r)]
                if parent is not None
                else []
            )
            if matches:
                joined.extend({**row, link.alias: match} for match in matches)
            elif not link.inner:
                joined.append(row)
        rows = joined
    return rows


def _flatten(links: list[Link]) -> list[Link]:
    out: list[Link] = []
    for link in links:
        out.append(link)
        out.extend(_flatten(link.links))
    return out


def link_value(link: Link, parent: Record) -> Any:
    """The parent's ``to`` column value that the link's ``from`` column must equal."""
    value = parent.get(link.to_column)
    return value.id if isinstance(value, Ref) else value
