"""Query options and preferences every Web API read shares: page size, annotations, aliases.

Pages of learn.microsoft.com/power-apps/developer/data-platform/webapi/...: "Page results" (
``odata.maxpagesize`` up to 5,000), "Count rows" (counts up to 5,000), "Select columns" and "Format
query results" (``odata.include-annotations``), "Query data" overview (parameter aliases; options
the Web API does not support are refused), "Perform conditional operations" (when 304 is allowed).
"""

from __future__ import annotations

import re

from simulators.dataverse import errors

DEFAULT_PAGE_SIZE = 5000
#: "Count rows using OData": counts go up to 5,000.
MAX_COUNT = 5000
ALIAS_OR_STRING = re.compile(r"'(?:[^']|'')*'|@[A-Za-z_]\w*")


def page_size(prefer: str) -> int | None:
    """``odata.maxpagesize``; "Max page size requests larger than 5,000 are ignored" (Page results)."""
    match = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer)
    return int(match.group(1)) if match and 0 < int(match.group(1)) <= DEFAULT_PAGE_SIZE else None


def with_aliases(query: dict[str, str]) -> dict[str, str]:
    """Query options with parameter aliases resolved: "You can use parameter aliases for $filter and
    $orderby ... If the alias isn't assigned a value, it's assumed to be null" (webapi/query/overview,
    "Use parameter aliases with query options"). The ``@name`` options themselves are then dropped."""
    aliases = {name: value for name, value in query.items() if name.startswith("@")}
    if not aliases:
        return query

    def resolve(match: re.Match[str]) -> str:
        text = match.group(0)
        return text if text.startswith("'") else aliases.get(text, "null")

    resolved = {name: value for name, value in query.items() if name not in aliases}
    for option in ("$filter", "$orderby"):
        if option in resolved:
            resolved[option] = ALIAS_OR_STRING.sub(resolve, resolved[option])
    return resolved


def check(query: dict[str, str], allowed: frozenset[str]) -> None:
    """An option the simulator does not implement is a 400, never ignored."""
    for name in query:
        if name not in allowed:
            raise errors.unsupported_option(name)


def may_be_not_modified(query: dict[str, str], prefer: str) -> bool:
    """Conditional retrievals: a query with ``$expand`` or ``Prefer: odata.include-annotations``
    "will never return 304 Not Modified", as related rows may have changed unseen
    (learn.microsoft.com/power-apps/developer/data-platform/webapi/perform-conditional-operations-using-web-api).
    """
    return "$expand" not in query and not annotations(prefer)


def annotations_applied(prefer: str) -> list[str]:
    """``Preference-Applied`` echoes the annotations preference it honoured ("Select columns",
    formatted values and lookup property data)."""
    match = re.search(r'odata\.include-annotations\s*=\s*("[^"]*"|[^,;\s]*)', prefer, re.I)
    return [f"odata.include-annotations={match.group(1)}"] if match else []


def annotations(prefer: str) -> frozenset[str]:
    """The annotation names of ``Prefer: odata.include-annotations="a,b"`` (``*`` = all)."""
    match = re.search(r'odata\.include-annotations\s*=\s*"?([^";]*)"?', prefer, re.IGNORECASE)
    if match is None:
        return frozenset()
    return frozenset(part.strip() for part in match.group(1).split(",") if part.strip())


def wants(wanted: frozenset[str], name: str) -> bool:
    """Whether ``name`` is among the requested annotations (``*`` and ``Namespace.*`` patterns)."""
    return any(
        pattern == "*"
        or pattern.lower() == name.lower()
        or (pattern.endswith(".*") and name.lower().startswith(pattern[:-1].lower()))
        for pattern in wanted
    )


def split_expand(text: str) -> list[tuple[str, dict[str, str]]]:
    """``a($select=x,y),b`` -> [("a", {"$select": "x,y"}), ("b", {})]."""
    items: list[tuple[str, dict[str, str]]] = []
    depth, start = 0, 0
    for position, char in enumerate(text + ","):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            part = text[start:position].strip()
            start = position + 1
            if not part:
                continue
            name, _, rest = part.partition("(")
            options: dict[str, str] = {}
            for option in split_top_level(rest[:-1] if rest.endswith(")") else rest, ";"):
                key, _, value = option.partition("=")
                options[key.strip()] = value.strip()
            items.append((name.strip(), options))
    return items


def split_top_level(text: str, separator: str) -> list[str]:
    """``text`` split at the separators outside parentheses (nested $expand options keep theirs)."""
    parts, depth, start = [], 0, 0
    for position, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        if char == separator and depth == 0:
            parts.append(text[start:position])
            start = position + 1
    parts.append(text[start:])
    return [part for part in parts if part.strip()]
