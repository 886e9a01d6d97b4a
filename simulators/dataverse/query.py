"""The OData query options Dataverse supports ("Query data using the Web API").

$filter: eq, ne, gt, ge, lt, le, and, or, not, parentheses, contains(), startswith(),
endswith(); lookups are filtered through their ``_<column>_value`` property ("Lookup
properties") and a related row's column as ``<navigation property>/<column>``; string comparison
is case-insensitive, as in Dataverse. $select, $orderby.
The Dataverse query functions ``Microsoft.Dynamics.CRM.In``, ``NotIn``, ``Between`` and
``NotBetween`` with inline ``PropertyName='x',PropertyValues=["a","b"]`` ("Filter rows", Dataverse
query functions; Microsoft's Python client writes ``In``/``NotIn`` for ``col(x).in_(...)``);
the other query functions are refused with 400.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from simulators.dataverse import errors
from simulators.dataverse.schema import LOOKUP_TYPES, NOT_A_PROPERTY_TYPES, Table, load_tables
from simulators.dataverse.store import Record, index_key

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$")
TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<paren>[(),])|(?P<word>[^\s(),']+))",
)
COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}
FUNCTIONS = {"contains", "startswith", "endswith"}
QUERY_FUNCTION_PREFIX = "microsoft.dynamics.crm."
QUERY_FUNCTION_ARGUMENTS = re.compile(
    r"\s*PropertyName\s*=\s*'(?P<name>\w+)'\s*,\s*PropertyValues\s*=\s*(?P<values>\[.*\])\s*", re.S
)


def normalize_datetime(value: str) -> str:
    """ISO 8601 in UTC with a Z, so datetimes compare as strings."""
    if len(value) == 10:
        return value
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def column_of(table: Table, name: str) -> str:
    """Map a property name ($select/$filter/$orderby) to a column; lookups as _<col>_value."""
    if name.startswith("_") and name.endswith("_value"):
        column = table.columns.get(name[1:-6])
        if column is not None and column.type in LOOKUP_TYPES:
            return column.name
    else:
        column = table.columns.get(name)
        if column is not None and column.type not in NOT_A_PROPERTY_TYPES:
            return column.name
    raise errors.unknown_property(name, table.logical_name)


def property_name(table: Table, column: str) -> str:
    return f"_{column}_value" if table.columns[column].type in LOOKUP_TYPES else column


#: A value as filters compare it (text case-insensitively, lookups by id): the store's index key.
comparable = index_key


Predicate = Callable[[Record], bool]
#: The row a lookup value points at (None if gone).
Related = Callable[[Any], Record | None]
# Rows matching the filter are among those with column == value for one of these pairs.
Hint = tuple[tuple[str, Any], ...] | None


@dataclass
class Filter:
    """A parsed $filter: the predicate, plus (column, value) pairs whose index rows cover every match."""

    predicate: Predicate
    index_hint: Hint


def parse_filter(text: str, table: Table, related: Related | None = None) -> Filter:
    """``related`` reads the row a lookup points at, for ``<navigation property>/<property>`` terms."""
    found = [m for m in TOKEN.finditer(text) if m.group(0).strip()]
    tokens = [m.group(0).strip() for m in found]
    parser = _Parser(tokens, table, text, [m.end() for m in found], related)
    predicate, hint = parser.expression()
    if parser.position != len(tokens):
        raise errors.bad_request(f"Syntax error at position {parser.position} in '{text}'.")
    return Filter(predicate, hint)


class _Parser:
    def __init__(
        self,
        tokens: list[str],
        table: Table,
        text: str = "",
        ends: list[int] | None = None,
        related: Related | None = None,
    ) -> None:
        self.tokens = tokens
        self.table = table
        self.text = text
        self.ends = ends or []
        self.related = related
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token.lower() != expected):
            raise errors.bad_request(
                f"Syntax error in $filter: expected {expected or 'a term'}, found {token!r}."
            )
        self.position += 1
        return token

    def expression(self) -> tuple[Predicate, Hint]:
        left, hint = self.conjunction()
        while (self.peek() or "").lower() == "or":
            self.take()
            right, right_hint = self.conjunction()
            left = _or(left, right)
            hint = hint + right_hint if hint is not None and right_hint is not None else None
        return left, hint

    def conjunction(self) -> tuple[Predicate, Hint]:
        left, hint = self.unary()
        while (self.peek() or "").lower() == "and":
            self.take()
            right, right_hint = self.unary()
            left, hint = _and(left, right), hint or right_hint
        return left, hint

    def unary(self) -> tuple[Predicate, Hint]:
        token = (self.peek() or "").lower()
        if token == "not":
            self.take()
            inner, _ = self.unary()
            return (lambda record: not inner(record)), None
        if token == "(":
            self.take()
            inner, hint = self.expression()
            self.take(")")
            return inner, hint
        if token in FUNCTIONS:
            return self.function(), None
        if token.startswith(QUERY_FUNCTION_PREFIX):
            return self.query_function()
        return self.comparison()

    def query_function(self) -> tuple[Predicate, Hint]:
        """``Microsoft.Dynamics.CRM.In|NotIn|Between|NotBetween(PropertyName='x',PropertyValues=[...])``."""
        name = self.take()[len(QUERY_FUNCTION_PREFIX) :].lower()
        self.take("(")
        start, depth = self.ends[self.position - 1], 1
        while depth:
            token = self.take()
            depth += (token == "(") - (token == ")")
        arguments = QUERY_FUNCTION_ARGUMENTS.fullmatch(self.text[start : self.ends[self.position - 1] - 1])
        if name not in {"in", "notin", "between", "notbetween"} or arguments is None:
            raise errors.bad_request(
                f"The query function Microsoft.Dynamics.CRM.{name} is not supported here."
            )
        try:
            values = json.loads(arguments.group("values"))
        except ValueError:
            raise errors.bad_request("Invalid JSON in PropertyValues.") from None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values) or not values:
            raise errors.bad_request("PropertyValues must be a non-empty array of strings.")
        if name.endswith("between") and len(values) != 2:
            raise errors.bad_request("Between takes two PropertyValues.")
        column = column_of(self.table, arguments.group("name"))
        coerced: dict[type, list[Any]] = {}  # the values as each column type, converted once

        def matches(record: Record) -> bool:
            value = comparable(record.get(column))
            if value is None:
                return False
            given = coerced.get(type(value))
            if given is None:
                given = coerced[type(value)] = [_coerce(v, value) for v in values]
            try:
                inside = given[0] <= value <= given[1] if name.endswith("between") else value in given
            except TypeError:  # a value that is not of the column's type matches nothing
                inside = False
            return bool(inside) != name.startswith("not")

        # In on the primary key: the matches are the rows of those ids (looked up, not scanned).
        by_id = name == "in" and column == self.table.primary_id
        hint = tuple((column, comparable(v)) for v in values) if by_id else None
        return matches, hint

    def function(self) -> Predicate:
        name = self.take().lower()
        self.take("(")
        column = column_of(self.table, self.take())
        self.take(",")
        needle = self.literal()
        self.take(")")
        if not isinstance(needle, str):
            raise errors.bad_request(f"{name}() needs a string literal.")
        needle = needle.lower()

        def matches(record: Record) -> bool:
            value = record.get(column)
            if not isinstance(value, str):
                return False
            value = value.lower()
            if name == "contains":
                return needle in value
            return value.startswith(needle) if name == "startswith" else value.endswith(needle)

        return matches

    def comparison(self) -> tuple[Predicate, Hint]:
        name = self.take()
        if "/" in name:
            return self.related_comparison(name), None
        column = column_of(self.table, name)
        operator = self.take().lower()
        if operator not in COMPARISONS:
            raise errors.bad_request(f"Syntax error in $filter: unknown operator {operator!r}.")
        literal = comparable(self.literal())
        hint = ((column, literal),) if operator == "eq" and literal is not None else None
        return _compare(column, operator, literal), hint

    def related_comparison(self, name: str) -> Predicate:
        """Filter rows, "Filter using lookup column property values": ``<single-valued navigation
        property>/<property> <operator> <literal>`` (one level) compares the related row's column."""
        navigation, _, inner = name.partition("/")
        lookup, targets = self.table.navigation.get(navigation, (navigation, ()))
        if self.related is None or lookup not in self.table.columns or "/" in inner:
            raise errors.unknown_property(name, self.table.logical_name)
        tables = load_tables()
        chosen = targets or self.table.columns[lookup].targets
        target_columns = {t: column_of(tables[t], inner) for t in chosen if t in tables}
        operator = self.take().lower()
        if operator not in COMPARISONS:
            raise errors.bad_request(f"Syntax error in $filter: unknown operator {operator!r}.")
        compare = _compare("value", operator, comparable(self.literal()))
        related = self.related

        def matches(record: Record) -> bool:
            reference = record.get(lookup)
            kind = getattr(reference, "table", None)
            target = related(reference) if kind in target_columns else None
            return compare({"value": target.get(target_columns[kind]) if target is not None else None})

        return matches

    def literal(self) -> Any:
        token = self.take()
        if token.startswith("'"):
            return token[1:-1].replace("''", "'")
        lowered = token.lower()
        if lowered in {"true", "false"}:
            return lowered == "true"
        if lowered == "null":
            return None
        if GUID.match(token):
            return token.lower()
        if DATETIME.match(token) and "-" in token:
            return normalize_datetime(token)
        try:
            return float(token) if any(c in token for c in ".eE") else int(token)
        except ValueError:
            raise errors.bad_request(f"Syntax error in $filter: {token!r} is not a literal.") from None


def _compare(column: str, operator: str, literal: Any) -> Predicate:
    def test(record: Record) -> bool:
        value = comparable(record.get(column))
        if operator == "eq":
            return bool(value == literal)
        if operator == "ne":
            return bool(value != literal)
        if value is None or literal is None:
            return False
        try:
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


def _coerce(text: str, like: Any) -> Any:
    """A query function's string value as the column's type (PropertyValues are Edm.String)."""
    try:
        if isinstance(like, bool):
            return text.lower() == "true"
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
    except ValueError:
        return None
    if isinstance(like, str) and DATETIME.match(text) and "-" in text and DATETIME.match(like):
        return normalize_datetime(text)
    return comparable(text)


def _and(left: Predicate, right: Predicate) -> Predicate:
    return lambda record: left(record) and right(record)


def _or(left: Predicate, right: Predicate) -> Predicate:
    return lambda record: left(record) or right(record)


def parse_select(text: str | None, table: Table) -> list[str] | None:
    """Columns named by $select (None = all columns, as Dataverse returns without $select)."""
    if not text:
        return None
    return [column_of(table, name.strip()) for name in text.split(",") if name.strip()]


def parse_orderby(text: str | None, table: Table) -> list[tuple[str, bool]]:
    """(column, descending) pairs."""
    if not text:
        return []
    order: list[tuple[str, bool]] = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1].lower() not in {"asc", "desc"}):
            raise errors.bad_request(f"Syntax error in $orderby: {part!r}.")
        order.append((column_of(table, words[0]), len(words) == 2 and words[1].lower() == "desc"))
    return order


def sort_records(records: list[Record], order: list[tuple[str, bool]]) -> list[Record]:
    """Stable multi-key sort; nulls first ascending, as SQL Server orders them."""
    for column, descending in reversed(order):
        records.sort(key=lambda r, c=column: sort_key(r.get(c)), reverse=descending)  # type: ignore[misc]
    return records


def sort_key(value: Any) -> tuple[int, Any]:
    value = comparable(value)
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    return (1, value)
