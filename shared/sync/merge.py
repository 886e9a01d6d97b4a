"""Three-way merge of one item's fields: the last synced state, the Outlook side, the CRM side.

Conflicts are settled per field, never by comparing the two servers' clocks (docs/ARCHITECTURE.md): a field
changed on one side since the last sync flows to the other side if its sync direction allows;
a field changed on both sides to different values goes to the direction (a one-way field's source
wins) or, for two-way fields, to the mailbox's tie-break.

The base is kept per side (:class:`FieldBase`), as fingerprints, because the mapping between the
two sides is lossy: a subject fitted to 200 characters, a CRM task status Canceled that To Do
shows as completed, an Outlook date-time with sub-second precision. Comparing each side with its
own last synced value means such differences are not mistaken for changes, and link rows never
store bodies or addresses (only digests). Columns that Dataverse validates together (``statecode``
with ``statuscode``) are merged as one *unit*, keyed by the leading column.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from shared.domain.bases import FieldBase
from shared.domain.model import FieldDirection
from shared.sync.fieldmaps.base import FLOWS_TO_CRM, FLOWS_TO_OUTLOOK, CrmValue, fingerprint


class Side(enum.StrEnum):
    """A side of the sync; also the tie-break setting ("crm" | "outlook")."""

    OUTLOOK = "outlook"
    CRM = "crm"


@dataclass(frozen=True, slots=True)
class ResolvedConflict:
    """A unit changed on both sides to different values, and who won (for the audit: no values)."""

    column: str
    winner: Side
    rule: Literal["tie_break", "direction"]


@dataclass(frozen=True, slots=True)
class MergeResult:
    to_crm: dict[str, CrmValue] = field(default_factory=dict)
    to_outlook: dict[str, CrmValue] = field(default_factory=dict)
    conflicts: tuple[ResolvedConflict, ...] = ()


def _side_values(values: Mapping[str, CrmValue], members: tuple[str, ...]) -> dict[str, CrmValue]:
    """The unit's columns this side knows; a missing column is no opinion (Outlook) or not read (CRM)."""
    return {column: values[column] for column in members if column in values}


def unit_fingerprints(
    outlook: Mapping[str, CrmValue], crm: Mapping[str, CrmValue], units: Mapping[str, tuple[str, ...]]
) -> dict[str, FieldBase]:
    """The base to store after a sync that leaves the sides with these values.

    ``outlook`` is the Outlook side's projection (a column it has no opinion on is absent);
    ``crm`` the record's values (a column the adapter does not read back, such as a party list, is
    absent; a null column is present with ``None``).
    """
    bases = {}
    for leader, members in units.items():
        outlook_values, crm_values = _side_values(outlook, members), _side_values(crm, members)
        outlook_print = fingerprint(outlook_values)
        same = _same(outlook_values, crm_values)  # after a create or an update: the usual case
        bases[leader] = FieldBase(outlook_print, outlook_print if same else fingerprint(crm_values))
    return bases


def base_after_own_write(
    link_base: Mapping[str, FieldBase],
    outlook: Mapping[str, CrmValue],
    crm: Mapping[str, CrmValue],
    units: Mapping[str, tuple[str, ...]],
) -> dict[str, FieldBase]:
    """The base when crmsync wrote the record last, for this mailbox, after the link was written
    (that write's link write was lost): a unit the item changed since the link takes the record's
    value as its base (crmsync copied the item there; the item's edits since win), and a unit the
    item did not change keeps the link's base. The lost write may have been one half of a merge
    whose other half (a Dynamics edit on its way to Outlook) never reached Outlook: the record
    then holds that edit, which must still count as changed in the CRM."""
    base = unit_fingerprints(crm, crm, units)
    for leader, members in units.items():
        kept = link_base.get(leader)
        if kept is not None and fingerprint(_side_values(outlook, members)) == kept.outlook:
            base[leader] = kept
    return base


def _same(one: Mapping[str, CrmValue], other: Mapping[str, CrmValue]) -> bool:
    """Equal values of equal types (``True == 1``, but their fingerprints differ)."""
    return one == other and all(type(value) is type(other[column]) for column, value in one.items())


def _is_empty(values: Mapping[str, CrmValue]) -> bool:
    return all(value is None for value in values.values())


def _winner(
    *,
    outlook_changed: bool,
    crm_changed: bool,
    first_sync: bool,
    outlook_empty: bool,
    crm_empty: bool,
    direction: FieldDirection,
    tie_break: Side,
) -> tuple[Side | None, Literal["tie_break", "direction"] | None]:
    """Which side's value the unit takes, and the rule that decided a real conflict (if one was)."""
    to_crm, to_outlook = direction in FLOWS_TO_CRM, direction in FLOWS_TO_OUTLOOK
    if outlook_changed and crm_changed:
        if first_sync and (outlook_empty or crm_empty):
            # Linking two existing copies: a value beats no value; nothing was really in conflict.
            return (Side.CRM if outlook_empty else Side.OUTLOOK), None
        if first_sync and to_crm and not to_outlook:
            # Linking an existing record (another mailbox's, the App for Outlook's): nothing says
            # Outlook changed a one-way field, so what Dynamics holds - maybe a user's - stays.
            return None, None
        if to_crm and to_outlook:
            return tie_break, "tie_break"
        if to_crm:
            return Side.OUTLOOK, "direction"
        if to_outlook:
            return Side.CRM, "direction"
        return None, None
    if outlook_changed:
        return Side.OUTLOOK, None
    if crm_changed:
        return Side.CRM, None
    return None, None


def merge_fields(
    *,
    outlook: Mapping[str, CrmValue],
    crm: Mapping[str, CrmValue],
    base: Mapping[str, FieldBase],
    units: Mapping[str, tuple[str, ...]],
    directions: Mapping[str, FieldDirection],
    tie_break: Side,
) -> MergeResult:
    """Merge unit by unit. A unit without a base (first sync, or a newly mapped column) counts as
    changed on both sides. A column missing from ``outlook`` is Outlook having no opinion (an unread
    body); a column missing from ``crm`` is one the CRM side was not read for (party lists), taken as
    unchanged there. Returns the values to write to each side and the conflicts settled."""
    to_crm: dict[str, CrmValue] = {}
    to_outlook: dict[str, CrmValue] = {}
    conflicts: list[ResolvedConflict] = []
    for leader, members in units.items():
        outlook_values = _side_values(outlook, members)
        crm_values = _side_values(crm, members)
        if all(
            column in crm_values and crm_values[column] == value for column, value in outlook_values.items()
        ):
            continue  # the sides agree (or Outlook has no opinion and nothing to take from the CRM)
        unit_base = base.get(leader)
        direction = directions.get(leader, FieldDirection.NONE)
        winner, rule = _winner(
            # Outlook with no opinion on a unit (an unread body) has nothing to offer.
            outlook_changed=bool(outlook_values)
            and (unit_base is None or fingerprint(outlook_values) != unit_base.outlook),
            # A unit the CRM side did not read (a party list) has not changed there, as far as we know.
            crm_changed=bool(crm_values) and (unit_base is None or fingerprint(crm_values) != unit_base.crm),
            first_sync=unit_base is None,
            outlook_empty=_is_empty(outlook_values),
            crm_empty=_is_empty(crm_values),
            direction=direction,
            tie_break=tie_break,
        )
        if rule is not None and winner is not None:
            conflicts.append(ResolvedConflict(leader, winner, rule))
        if winner is Side.OUTLOOK and direction in FLOWS_TO_CRM:
            to_crm.update(outlook_values)
        elif winner is Side.CRM and direction in FLOWS_TO_OUTLOOK:
            to_outlook.update(crm_values)
    return MergeResult(to_crm, to_outlook, tuple(conflicts))


def encode_field_bases(fields: Mapping[str, FieldBase]) -> str:
    """Compact JSON for a link row property: ``{"<column>": ["<outlook fp>", "<crm fp>"], ...}``."""
    return json.dumps(
        {column: [entry.outlook, entry.crm] for column, entry in sorted(fields.items())},
        separators=(",", ":"),
    )


def decode_field_bases(encoded: str | None) -> dict[str, FieldBase]:
    """Inverse of :func:`encode_field_bases`; an empty or missing property is an empty base."""
    if not encoded:
        return {}
    raw = json.loads(encoded)
    if not isinstance(raw, dict):
        raise ValueError("field_bases must be a JSON object")
    return {str(column): FieldBase(str(pair[0]), str(pair[1])) for column, pair in raw.items()}
