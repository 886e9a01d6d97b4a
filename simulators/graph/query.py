"""$filter and $orderby over Graph JSON (learn.microsoft.com/graph/query-parameters).

Only the forms below are understood; anything else is a 400 rather than a silently wrong answer.
Exchange compares strings case-insensitively, so these filters do too.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Callable
from typing import TypeVar, cast

from simulators.graph.core import GraphError, Json, bad_request, parse_iso
from simulators.graph.resources import extended_key
from simulators.graph.store import Item, Kind

T = TypeVar("T")

# (properties, extended properties keyed by lower-cased id) -> matches?
Predicate = Callable[[Json, dict[str, Json]], bool]

_STRING = r"'((?:[^']|'')*)'"
_EXTENDED = re.compile(
    rf"singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*\1/id\s+eq\s+{_STRING}\s+and\s+\1/value\s+eq\s+{_STRING}\s*\)",
    re.IGNORECASE,
)
_ANY_OBJECT = re.compile(rf"(\w+)/any\(\s*(\w+)\s*:\s*\2/(\w+(?:/\w+)*)\s+eq\s+{_STRING}\s*\)", re.IGNORECASE)
_ANY_STRING = re.compile(rf"(\w+)/any\(\s*(\w+)\s*:\s*\2\s+eq\s+{_STRING}\s*\)", re.IGNORECASE)
_EQUALS = re.compile(rf"(\w+(?:/\w+)*)\s+(eq|ne)\s+(?:{_STRING}|(true|false))", re.IGNORECASE)
_INSTANT = r"(\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)"
_COMPARE = re.compile(rf"(\w+(?:/\w+)*)\s+(eq|ne|gt|ge|lt|le)\s+{_INSTANT}(?![\w:.+-])", re.IGNORECASE)
_OPERATORS: dict[str, Callable[[dt.datetime, dt.datetime], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt,
    "ge": operator.ge, "lt": operator.lt, "le": operator.le,
}  # fmt: skip


def lookup(value: object, path: str) -> object:
    for part in path.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _same(actual: object, expected: object) -> bool:
    if isinstance(actual, str) and isinstance(expected, str):
        return actual.casefold() == expected.casefold()
    return actual == expected


def _text(raw: str) -> str:
    return raw.replace("''", "'")


def parse_filter(raw: str | None) -> Predicate:
    """Conditions joined with ``and``:

    - ``singleValueExtendedProperties/any(ep: ep/id eq '..' and ep/value eq '..')``
      (learn.microsoft.com/graph/api/singlevaluelegacyextendedproperty-get);
    - ``collection/any(x: x/path eq '..')`` and ``collection/any(x: x eq '..')``, e.g.
      ``emailAddresses/any(a: a/address eq '..')`` or ``categories/any(c: c eq '..')``;
    - ``path eq|ne '..' | true | false``, e.g. ``from/emailAddress/address eq '..'``, ``isRead ne true``;
    - ``path eq|ne|gt|ge|lt|le <date or date-time>`` (unquoted, as Graph writes DateTimeOffset
      literals), e.g. ``receivedDateTime ge 2016-01-01T00:00:00Z``, the filter message-delta documents.
    """
    if not raw:
        return lambda props, extended: True
    tests: list[Predicate] = []
    rest = raw
    for pattern, build in (
        (_EXTENDED, _extended_test),
        (_ANY_OBJECT, _any_object_test),
        (_ANY_STRING, _any_string_test),
        (_EQUALS, _equals_test),
        (_COMPARE, _compare_test),
    ):
        for match in pattern.finditer(rest):
            tests.append(build(match))
        rest = pattern.sub("", rest)
    if re.sub(r"\band\b", "", rest, flags=re.IGNORECASE).strip():
        raise bad_request(f"This simulator does not support the $filter '{raw}'.", "BadRequest")
    return lambda props, extended: all(test(props, extended) for test in tests)


def _extended_test(match: re.Match[str]) -> Predicate:
    prop_id, value = extended_key(_text(match.group(2))), _text(match.group(3))
    return lambda props, extended: _same(str(extended.get(prop_id, {}).get("value")), value)


def _any_object_test(match: re.Match[str]) -> Predicate:
    collection, path, value = match.group(1), match.group(3), _text(match.group(4))
    return lambda props, extended: any(_same(lookup(e, path), value) for e in props.get(collection) or [])


def _any_string_test(match: re.Match[str]) -> Predicate:
    collection, value = match.group(1), _text(match.group(3))
    return lambda props, extended: any(_same(e, value) for e in props.get(collection) or [])


def _equals_test(match: re.Match[str]) -> Predicate:
    path, negated, text, flag = match.group(1), match.group(2).lower() == "ne", match.group(3), match.group(4)
    expected: object = _text(text) if text is not None else flag.lower() == "true"
    return lambda props, extended: _same(lookup(props, path), expected) != negated


def _instant(text: str) -> dt.datetime | None:
    try:
        return parse_iso(text)
    except GraphError:
        return None


def _compare_test(match: re.Match[str]) -> Predicate:
    path, compare, bound = match.group(1), _OPERATORS[match.group(2).lower()], _instant(match.group(3))
    if bound is None:
        raise bad_request(f"Invalid date-time literal '{match.group(3)}'.", "BadRequest")

    def test(props: Json, extended: dict[str, Json]) -> bool:
        value = lookup(props, path)
        actual = _instant(value) if isinstance(value, str) else None
        return actual is not None and compare(actual, bound)

    return test


def parse_orderby(raw: str | None) -> list[tuple[str, bool]]:
    """``$orderby=path [asc|desc], ...`` as (path, descending) pairs, most significant first."""
    clauses: list[tuple[str, bool]] = []
    for clause in (c.strip() for c in (raw or "").split(",")):
        if not clause:
            continue
        path, _, direction = clause.partition(" ")
        direction = direction.strip().lower()
        if direction not in ("", "asc", "desc"):
            raise bad_request(f"Invalid $orderby clause '{clause}'.", "BadRequest")
        clauses.append((path, direction == "desc"))
    return clauses


def sort_key(path: str, props: Json) -> tuple[bool, str]:
    value = lookup(props, path)
    return value is not None, "" if value is None else str(value)


def ordered(rows: list[T], raw: str | None, full: Callable[[T], Json] | None = None) -> list[T]:
    """Rows sorted by ``$orderby``; stable, so earlier clauses win. ``full`` gives a row's every
    property when the rows are items rendered later: $orderby may name a property $select leaves out."""
    for path, descending in reversed(parse_orderby(raw)):
        rows = sorted(
            rows,
            key=lambda row: sort_key(path, full(row) if full is not None else cast(Json, row)),
            reverse=descending,
        )
    return rows


def delta_order(kind: Kind, items: list[Item], orderby: str | None) -> list[Item]:
    """message-delta: "The only supported $orderby expression is $orderby=receivedDateTime+desc";
    without it the order is not guaranteed (the store's). Other delta functions take no $orderby."""
    if orderby is None:
        return items
    if kind is not Kind.MESSAGE or parse_orderby(orderby) != [("receivedDateTime", True)]:
        raise bad_request(f"The $orderby '{orderby}' is not supported with delta.", "BadRequest")
    return sorted(items, key=lambda i: sort_key("receivedDateTime", i.props), reverse=True)
