"""A user's synchronization filter, evaluated by Dataverse itself while impersonating the user.

Dynamics' default Outlook synchronization filters ("Choose records to synchronize between Dynamics
365 and Outlook or Exchange", learn.microsoft.com/dynamics365/outlook-app/choose-records-synchronize):
"My Contacts" - contacts the user owns that are active; "My Appointments" - appointments where the
user is the organizer or a required attendee; "My Tasks" - tasks the user owns.

Each filter runs as one OData query with the changed ids added (``(id eq A or id eq B) and <filter>``),
as the user (``CallerObjectId``), so the user's security roles decide too: a record the user may not
read is outside the filter, exactly as for Dynamics (a user without any read privilege on the table
gets Dataverse's access-denied error: then nothing is in the filter). Appointments are decided on
their activity parties: organizer (participationtypemask 7) or required attendee (5) of the user.

The filter's result also tells who organizes an appointment: a meeting with attendees is created
in Outlook only in the organizer's mailbox (the others receive Graph's invitations).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from shared.crm.errors import PrivilegeDenied
from shared.crm.port import CrmQueryPort

ORGANIZER, REQUIRED_ATTENDEE, OPTIONAL_ATTENDEE, OWNER = 7, 5, 6, 9
_IDS_PER_QUERY = 50  # keeps the URL well under Dataverse's limits
_PRIMARY = {"contact": "contactid", "task": "activityid", "appointment": "activityid"}


@dataclass(frozen=True, slots=True)
class FilterVerdict:
    """Which of the asked ids are in the user's filter, and which appointments the user organizes."""

    members: frozenset[uuid.UUID]
    organized: frozenset[uuid.UUID] = frozenset()


def _any_id(column: str, ids: Sequence[uuid.UUID]) -> str:
    return "(" + " or ".join(f"{column} eq {record_id}" for record_id in ids) + ")"


def default_filter(table: str, user_id: uuid.UUID, ids: Sequence[uuid.UUID]) -> tuple[str, str]:
    """(table to query, OData $filter) of Dynamics' default filter for ``table``, with ``ids`` added."""
    if table == "contact":
        return "contact", f"{_any_id('contactid', ids)} and _ownerid_value eq {user_id} and statecode eq 0"
    if table == "task":
        return "task", f"{_any_id('activityid', ids)} and _ownerid_value eq {user_id}"
    if table == "appointment":
        roles = f"(participationtypemask eq {ORGANIZER} or participationtypemask eq {REQUIRED_ATTENDEE})"
        return (
            "activityparty",
            f"{_any_id('_activityid_value', ids)} and _partyid_value eq {user_id} and {roles}",
        )
    raise ValueError(f"no synchronization filter for table {table!r}")


async def evaluate(
    crm: CrmQueryPort, table: str, *, user_id: uuid.UUID, caller: str, ids: Sequence[uuid.UUID]
) -> FilterVerdict:
    """The ids among ``ids`` in the user's filter for ``table`` (see the module docstring)."""
    try:
        return await _evaluate(crm, table, user_id=user_id, caller=caller, ids=ids)
    except PrivilegeDenied:
        return FilterVerdict(frozenset())  # no read privilege on the table at all: nothing is in


async def _evaluate(
    crm: CrmQueryPort, table: str, *, user_id: uuid.UUID, caller: str, ids: Sequence[uuid.UUID]
) -> FilterVerdict:
    members: set[uuid.UUID] = set()
    organized: set[uuid.UUID] = set()
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), _IDS_PER_QUERY):
        chunk = unique[start : start + _IDS_PER_QUERY]
        queried, where = default_filter(table, user_id, chunk)
        if queried == "activityparty":
            rows = await crm.query(
                queried, where=where, select=["_activityid_value", "participationtypemask"], caller=caller
            )
            for row in rows:
                activity = uuid.UUID(str(row["_activityid_value"]))
                members.add(activity)
                if row.get("participationtypemask") == ORGANIZER:
                    organized.add(activity)
        else:
            rows = await crm.query(queried, where=where, select=[_PRIMARY[table]], caller=caller)
            members.update(uuid.UUID(str(row[_PRIMARY[table]])) for row in rows)
    asked = set(unique)
    return FilterVerdict(frozenset(members & asked), frozenset(organized & asked))
