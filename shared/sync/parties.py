"""Activity parties: the field maps' party columns become an activity's party list.

``from``, ``to``, ``organizer``... are not Web API columns; each address resolves to a systemuser,
contact, account or lead, in that order (Dynamics' resolution order), else stays an unresolved
``addressused``. Party lists are write-only here: a CRM state reports them as not read, which the
merge treats as "the CRM has no value" and never as an Outlook change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from shared.crm.errors import CrmError
from shared.crm.port import CrmPort, Party, RecordRef
from shared.sync.fieldmaps import CrmValue, PartySpec

logger = logging.getLogger(__name__)

# Field-map columns that are activity parties, per table.
PARTY_COLUMNS: Mapping[str, frozenset[str]] = {
    "email": frozenset({"from", "to", "cc", "bcc"}),
    "appointment": frozenset({"organizer", "requiredattendees", "optionalattendees"}),
    # A series' organizer and attendees are its master's parties (Dynamics copies them to the instances).
    "recurringappointmentmaster": frozenset({"organizer", "requiredattendees", "optionalattendees"}),
}


class PartyResolver:
    """Resolves party addresses for one run and one CRM user (cached: a thread repeats addresses).

    A lookup the user is not allowed to make leaves the address unresolved instead of failing."""

    def __init__(self, crm: CrmPort, caller: str) -> None:
        self._crm = crm
        self._caller = caller
        self._cache: dict[str, RecordRef | None] = {}

    def remember(self, address: str, record: RecordRef) -> None:
        """A record this run created for ``address`` (a contact for an unknown sender)."""
        self._cache[address.lower()] = record

    async def party(self, spec: PartySpec) -> Party:
        address = spec.address.lower()
        if address not in self._cache:
            try:
                found = await self._crm.find_by_email(address, caller=self._caller)
            except CrmError as error:
                if error.retryable:
                    raise
                # The user may not read one of the tables (e.g. no lead privilege): the address alone
                # is still a valid party, and the item must not be parked for it.
                logger.info("party resolution failed (%s); keeping the address unresolved", error.code)
                found = []
            self._cache[address] = found[0] if found else None
        return Party(spec.participation, self._cache[address], spec.address)

    async def parties(self, values: Mapping[str, CrmValue], columns: frozenset[str]) -> tuple[Party, ...]:
        specs = [spec for column in sorted(columns) for spec in _specs(values.get(column))]
        return tuple([await self.party(spec) for spec in specs])


def _specs(value: CrmValue) -> tuple[PartySpec, ...]:
    return value if isinstance(value, tuple) else ()
