"""A user's synchronization filter, evaluated by Dataverse itself while impersonating the user.

Which CRM records of a table reach a mailbox is the user's Outlook synchronization filter, as in
Dynamics 365 for Outlook and Server-Side Synchronization:

- The user's own filters are userquery rows with ``querytype`` 256 (UserQueryQueryType
  ``OutlookFilters``, learn.microsoft.com/dotnet/api/microsoft.crm.sdk.userqueryquerytype) and
  ``returnedtypecode`` = the table, read as the user. A record is in when any *enabled*
  (``statecode`` 0) filter of the table returns it (the union); a table whose filters are all
  disabled syncs nothing.
- Without user filters, Dynamics' defaults ("Choose records to synchronize between Dynamics 365 and
  Outlook or Exchange", learn.microsoft.com/dynamics365/outlook-app/choose-records-synchronize):
  "My Contacts" - contacts the user owns that are active; "My Appointments" - appointments where
  the user is the organizer or a required attendee; "My Tasks" - tasks the user owns.
- A mailbox setting (``MailboxSettings.sync_filters``) may replace them with its own FetchXML.

Every filter is FetchXML ("Query data using FetchXml", power-apps/developer/data-platform/fetchxml/
overview), run with the changed ids added as an ``in`` condition on the primary id, as the user
(``CallerObjectId``), so the user's security roles decide too: a record the user may not read is
outside the filter (a user without any read privilege on the table gets Dataverse's access-denied
error: then nothing is in the filter).

The organizer of an appointment is read the same way (a FetchXML over its activity parties; with
Dynamics' default filter the filter's own query tells it, each row carrying the user's party role): a
meeting with attendees is created in Outlook only in the organizer's mailbox.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from shared.crm.errors import PrivilegeDenied
from shared.crm.port import CrmQueryPort
from shared.domain.fetchxml import InvalidFetchXml, parse_fetch

ORGANIZER, REQUIRED_ATTENDEE, OPTIONAL_ATTENDEE, OWNER = 7, 5, 6, 9
OUTLOOK_FILTERS = 256  # UserQueryQueryType.OutlookFilters
_IDS_PER_QUERY = 50  # keeps the URL well under Dataverse's limits
_PRIMARY = {"contact": "contactid", "task": "activityid", "appointment": "activityid"}

DEFAULT_FILTERS: dict[str, str] = {
    "contact": (
        '<fetch><entity name="contact"><filter type="and">'
        '<condition attribute="ownerid" operator="eq-userid"/>'
        '<condition attribute="statecode" operator="eq" value="0"/></filter></entity></fetch>'
    ),
    "appointment": (
        '<fetch distinct="true"><entity name="appointment">'
        '<link-entity name="activityparty" from="activityid" to="activityid" link-type="inner">'
        '<filter type="and"><condition attribute="partyid" operator="eq-userid"/>'
        f'<condition attribute="participationtypemask" operator="in"><value>{ORGANIZER}</value>'
        f"<value>{REQUIRED_ATTENDEE}</value></condition></filter></link-entity></entity></fetch>"
    ),
    "task": (
        '<fetch><entity name="task"><filter type="and">'
        '<condition attribute="ownerid" operator="eq-userid"/></filter></entity></fetch>'
    ),
}
_ORGANIZED = (
    '<fetch distinct="true"><entity name="appointment">'
    '<link-entity name="activityparty" from="activityid" to="activityid" link-type="inner">'
    '<filter type="and"><condition attribute="partyid" operator="eq-userid"/>'
    f'<condition attribute="participationtypemask" operator="eq" value="{ORGANIZER}"/>'
    "</filter></link-entity></entity></fetch>"
)


# Dynamics' default "My Appointments" with the user's party role in each row: one query tells the
# members and which of them the user organizes (the default filter selects the organizer's rows).
_DEFAULT_WITH_ROLE = DEFAULT_FILTERS["appointment"].replace(
    '<link-entity name="activityparty" from="activityid" to="activityid" link-type="inner">',
    '<link-entity name="activityparty" from="activityid" to="activityid" link-type="inner" alias="party">'
    '<attribute name="participationtypemask"/>',
)


@dataclass(frozen=True, slots=True)
class FilterVerdict:
    """Which of the asked ids are in the user's filter, and which appointments the user organizes."""

    members: frozenset[uuid.UUID]
    organized: frozenset[uuid.UUID] = frozenset()


def with_ids(fetch_xml: str, table: str, ids: Sequence[uuid.UUID] | None) -> str:
    """``fetch_xml`` returning only the primary ids, restricted to ``ids`` (an ``in`` condition;
    ``None``: every record of the filter)."""
    root = parse_fetch(fetch_xml, table)
    for paging in ("top", "count", "page", "paging-cookie"):
        root.attrib.pop(paging, None)
    root.set("distinct", "true")
    [entity] = root.findall("entity")  # parse_fetch checked there is exactly one
    for child in list(entity):
        if child.tag in {"attribute", "all-attributes", "order"}:
            entity.remove(child)
    ET.SubElement(entity, "attribute", name=_PRIMARY[table])
    if ids is None:
        return ET.tostring(root, encoding="unicode")
    restriction = ET.SubElement(entity, "filter", type="and")
    condition = ET.SubElement(restriction, "condition", attribute=_PRIMARY[table], operator="in")
    for record_id in ids:
        ET.SubElement(condition, "value").text = str(record_id)
    return ET.tostring(root, encoding="unicode")


async def user_filters(crm: CrmQueryPort, table: str, *, user_id: uuid.UUID, caller: str) -> list[str] | None:
    """The FetchXML of the user's enabled Outlook filters of ``table``; ``None`` when the user has
    none at all (Dynamics' defaults apply), ``[]`` when every one is disabled. A user whose roles
    grant no read of userquery has no personal filters either."""
    try:
        rows = await crm.query(
            "userquery",
            where=(
                f"querytype eq {OUTLOOK_FILTERS} and returnedtypecode eq '{table}' "
                f"and _ownerid_value eq {user_id}"
            ),
            select=["fetchxml", "statecode"],
            caller=caller,
        )
    except PrivilegeDenied:
        return None
    if not rows:
        return None
    return [str(row["fetchxml"]) for row in rows if row.get("statecode") == 0 and row.get("fetchxml")]


async def all_members(
    crm: CrmQueryPort, table: str, *, user_id: uuid.UUID, caller: str, replacement: str | None = None
) -> list[uuid.UUID]:
    """Every record id in the user's filter for ``table`` (an initial fill's work list), read as the
    user in pages; ``[]`` when the user may not read the table at all."""
    if table not in _PRIMARY:
        raise ValueError(f"no synchronization filter for table {table!r}")
    try:
        if replacement is not None:
            filters: list[str] | None = [replacement]
        else:
            filters = await user_filters(crm, table, user_id=user_id, caller=caller)
        members: dict[uuid.UUID, None] = {}
        for fetch_xml in [DEFAULT_FILTERS[table]] if filters is None else filters:
            rows = await crm.fetch(table, fetch_xml=with_ids(fetch_xml, table, None), caller=caller)
            members.update(dict.fromkeys(uuid.UUID(str(row[_PRIMARY[table]])) for row in rows))
    except PrivilegeDenied:
        return []
    return list(members)


async def evaluate(
    crm: CrmQueryPort,
    table: str,
    *,
    user_id: uuid.UUID,
    caller: str,
    ids: Sequence[uuid.UUID],
    replacement: str | None = None,
    read_filters: Callable[[], Awaitable[list[str] | None]] | None = None,
) -> FilterVerdict:
    """The ids among ``ids`` in the user's filter for ``table`` (see the module docstring);
    ``replacement`` is a mailbox setting's FetchXML used instead of the user's filters;
    ``read_filters`` reads the user's filters as :func:`user_filters` does (a worker's cache)."""
    if table not in _PRIMARY:
        raise ValueError(f"no synchronization filter for table {table!r}")
    unique = list(dict.fromkeys(ids))
    if not unique:
        return FilterVerdict(frozenset())
    try:
        if replacement is not None:
            filters: list[str] | None = [replacement]
        elif read_filters is not None:
            filters = await read_filters()
        else:
            filters = await user_filters(crm, table, user_id=user_id, caller=caller)
        if table == "appointment" and filters is None:
            return await _default_appointments(crm, caller=caller, ids=unique)
        chosen = [DEFAULT_FILTERS[table]] if filters is None else filters
        members = await _members(crm, table, chosen, caller=caller, ids=unique)
        organized: set[uuid.UUID] = set()
        if table == "appointment" and members:
            organized = await _members(crm, table, [_ORGANIZED], caller=caller, ids=sorted(members, key=str))
    except PrivilegeDenied:
        return FilterVerdict(frozenset())  # no read privilege on the table at all: nothing is in
    return FilterVerdict(frozenset(members), frozenset(organized))


_USER_COLUMNS = {"ownerid", "owninguser"}
_ROUTED_MASKS = {str(mask) for mask in (ORGANIZER, REQUIRED_ATTENDEE, OPTIONAL_ATTENDEE, OWNER)}


def reaches_beyond_the_user(fetch_xml: str, table: str) -> bool:
    """Whether a filter may select records the user neither owns nor attends (so routing by owner,
    parties and links misses them). ``False`` only when the entity's top-level ``and`` filter
    requires ``ownerid``/``owninguser`` ``eq-userid``, or an inner link to activityparty requires
    ``partyid`` ``eq-userid`` in an owner, organizer or attendee role - Dynamics' defaults and
    filters narrowed from them. Anything else (an ``or``, a team, no user condition) may reach
    beyond; a filter that is not FetchXML of the table selects nothing."""
    try:
        [entity] = parse_fetch(fetch_xml, table).findall("entity")
    except InvalidFetchXml:
        return False

    def conditions(element: ET.Element) -> list[ET.Element]:
        return [
            condition
            for found in element.findall("filter")
            if found.get("type", "and") == "and"
            for condition in found.findall("condition")
        ]

    if any(
        c.get("attribute") in _USER_COLUMNS and c.get("operator") == "eq-userid" for c in conditions(entity)
    ):
        return False
    for link in entity.findall("link-entity"):
        if link.get("name") != "activityparty" or link.get("link-type", "inner") != "inner":
            continue
        held = conditions(link)
        party = any(c.get("attribute") == "partyid" and c.get("operator") == "eq-userid" for c in held)
        masks = [
            {c.get("value")} if c.get("operator") == "eq" else {v.text for v in c.findall("value")}
            for c in held
            if c.get("attribute") == "participationtypemask" and c.get("operator") in {"eq", "in"}
        ]
        if party and any(values <= _ROUTED_MASKS for values in masks):
            return False
    return True


async def members_of(
    crm: CrmQueryPort, table: str, filters: Sequence[str], *, caller: str, ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """The ids among ``ids`` that any of ``filters`` selects, by Dataverse as the user (one FetchXML
    per filter and 50 ids); none when the user may not read the table."""
    try:
        return await _members(crm, table, filters, caller=caller, ids=list(dict.fromkeys(ids)))
    except PrivilegeDenied:
        return set()


async def _default_appointments(crm: CrmQueryPort, *, caller: str, ids: Sequence[uuid.UUID]) -> FilterVerdict:
    """Dynamics' default appointment filter over ``ids`` and the ones the user organizes, in one
    FetchXML per 50 ids (each row carries the user's party role)."""
    members: set[uuid.UUID] = set()
    organized: set[uuid.UUID] = set()
    for start in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[start : start + _IDS_PER_QUERY]
        fetch_xml = with_ids(_DEFAULT_WITH_ROLE, "appointment", chunk)
        for row in await crm.fetch("appointment", fetch_xml=fetch_xml, caller=caller):
            record_id = uuid.UUID(str(row["activityid"]))
            members.add(record_id)
            if row.get("party.participationtypemask") == ORGANIZER:
                organized.add(record_id)
    asked = set(ids)
    return FilterVerdict(frozenset(members & asked), frozenset(organized & asked))


async def _members(
    crm: CrmQueryPort, table: str, filters: Sequence[str], *, caller: str, ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    asked = set(ids)
    members: set[uuid.UUID] = set()
    for fetch_xml in filters:
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            rows = await crm.fetch(table, fetch_xml=with_ids(fetch_xml, table, chunk), caller=caller)
            members.update(uuid.UUID(str(row[_PRIMARY[table]])) for row in rows)
    return members & asked
