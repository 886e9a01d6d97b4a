"""FetchXML text checks shared by the mailbox settings (a replacement filter) and the CRM filter.

"Query data using FetchXml" (learn.microsoft.com/power-apps/developer/data-platform/fetchxml/overview):
a query is one ``fetch`` element with one ``entity`` naming the table.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET


class InvalidFetchXml(ValueError):
    """Not a FetchXML query of the expected table."""


def parse_fetch(fetch_xml: str, table: str) -> ET.Element:
    """The ``fetch`` element of a FetchXML query over ``table`` (XML declarations are refused)."""
    if "<!" in fetch_xml:
        raise InvalidFetchXml("a FetchXML filter has no XML declarations")
    try:
        root = ET.fromstring(fetch_xml)  # noqa: S314 - declarations (DTDs, entities) refused above
    except ET.ParseError as error:
        raise InvalidFetchXml(f"not well-formed XML: {error}") from None
    entities = root.findall("entity")
    if root.tag != "fetch" or len(entities) != 1:
        raise InvalidFetchXml("a FetchXML query is one <fetch> with one <entity>")
    if entities[0].get("name") != table:
        raise InvalidFetchXml(f"the filter queries {entities[0].get('name')!r}, not {table!r}")
    return root
