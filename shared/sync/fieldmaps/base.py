"""The building blocks of a field map: CRM values, activity parties, one mapping per column.

A field map says, for one :class:`~shared.domain.model.ItemKind`, which Dataverse column each piece
of the neutral item becomes (``to_crm``), how a CRM value is written back onto a neutral item
(``to_outlook``, only where the field can flow that way), the column's default sync direction and
whether a mailbox may override it (``fixed``), as Dynamics' Outlook synchronization field mappings
do ("Synchronization field mappings", Dynamics 365 Outlook synchronization settings).

CRM values are kept in the shape Dataverse's Web API uses, so a projection compares equal to what
the CRM returns: strings, integers (choices), booleans, ``None`` (null), UTC date-times as
``YYYY-MM-DDTHH:MM:SSZ`` (the Web API's format, whole seconds), dates as ``YYYY-MM-DD``, and party
lists as a sorted tuple of :class:`PartySpec`.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, TypeVar

from shared.crm.limits import Fitted, fit_value
from shared.domain.model import (
    Appointment,
    Contact,
    Email,
    FieldDirection,
    Importance,
    ItemKind,
    Participation,
    Task,
)


@dataclass(frozen=True, order=True, slots=True)
class PartySpec:
    """One activity party to write: its role and the SMTP address it was addressed with.

    Resolving the address to a systemuser, contact, account or lead (in that order, else
    ``addressused`` alone) is I/O and belongs to the applier, not here.
    """

    participation: Participation
    address: str


CrmValue = str | int | bool | None | tuple[PartySpec, ...]


class Absent(enum.Enum):
    ABSENT = "absent"


ABSENT = Absent.ABSENT
"""Returned by a ``to_crm`` that has no value to offer (an email whose body was not read): the
column is left out of the projection, so it is neither written nor compared."""

PRIORITY_CODES: Mapping[Importance, int] = {Importance.LOW: 0, Importance.NORMAL: 1, Importance.HIGH: 2}
"""Outlook importance as ``prioritycode`` (0 Low, 1 Normal, 2 High on appointment, task and email)."""

FLOWS_TO_CRM = frozenset({FieldDirection.TWO_WAY, FieldDirection.TO_CRM})
FLOWS_TO_OUTLOOK = frozenset({FieldDirection.TWO_WAY, FieldDirection.TO_OUTLOOK})

ItemT = TypeVar("ItemT", Contact, Appointment, Task, Email)
ChoiceT = TypeVar("ChoiceT")


@dataclass(frozen=True, slots=True)
class FieldMapping(Generic[ItemT]):
    """One CRM column of a field map.

    ``to_outlook`` is ``None`` for columns that never flow to Outlook (then the direction must be
    ``to_crm`` or ``none``). ``follows`` names the column whose direction and merge decision this
    one shares, so pairs that Dataverse validates together (``statecode`` with ``statuscode``)
    never split. ``on_create`` is ``False`` where the contract says the column is not valid for
    create; such columns are written by an update right after the create.
    """

    column: str
    to_crm: Callable[[ItemT], CrmValue | Absent]
    to_outlook: Callable[[ItemT, CrmValue], ItemT] | None = None
    direction: FieldDirection = FieldDirection.TWO_WAY
    fixed: bool = False
    follows: str | None = None
    on_create: bool = True

    def __post_init__(self) -> None:
        if self.to_outlook is None and self.direction in FLOWS_TO_OUTLOOK:
            raise ValueError(f"{self.column}: a column without to_outlook cannot flow to Outlook")


@dataclass(frozen=True, slots=True)
class Projection:
    """A neutral item seen as CRM columns, already fitted to the column limits."""

    values: dict[str, CrmValue]
    fitted: tuple[Fitted, ...] = ()


@dataclass(frozen=True)
class FieldMap(Generic[ItemT]):
    """The field map of one item kind; see the kind's module for its choices."""

    kind: ItemKind
    table: str
    mappings: tuple[FieldMapping[ItemT], ...]
    blank: Callable[[], ItemT] | None = None  # start of an Outlook item built from CRM; None: never
    unsyncable: Callable[[ItemT], str | None] | None = None  # why an item is not synced, if it isn't
    required_from_crm: tuple[str, ...] = ()  # columns a CRM record needs to become an Outlook item
    _by_column: dict[str, FieldMapping[ItemT]] = field(init=False, repr=False, compare=False)
    _units: Mapping[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_column = {mapping.column: mapping for mapping in self.mappings}
        if len(by_column) != len(self.mappings):
            raise ValueError(f"{self.table}: a column is mapped twice")
        for mapping in self.mappings:
            if mapping.follows is not None and by_column.get(mapping.follows, mapping).follows is not None:
                raise ValueError(f"{self.table}.{mapping.column}: follows must name a leading column")
        object.__setattr__(self, "_by_column", by_column)
        units: dict[str, list[str]] = {}
        for mapping in self.mappings:
            units.setdefault(mapping.follows or mapping.column, []).append(mapping.column)
        leaders = {
            leader: tuple(sorted(members, key=lambda c: c != leader)) for leader, members in units.items()
        }
        object.__setattr__(self, "_units", MappingProxyType(leaders))  # planned with, item after item

    def skip_reason(self, item: ItemT) -> str | None:
        """Why this item is not synchronised at all (a draft, an occurrence of a series), or None."""
        return self.unsyncable(item) if self.unsyncable else None

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self._by_column)

    def mapping(self, column: str) -> FieldMapping[ItemT]:
        return self._by_column[column]

    def units(self) -> Mapping[str, tuple[str, ...]]:
        """Leading column -> the columns merged with it as one unit (itself first)."""
        return self._units

    def directions(
        self,
        overrides: Mapping[str, FieldDirection] | None = None,
        organization: Mapping[str, FieldDirection] | None = None,
    ) -> dict[str, FieldDirection]:
        """Effective direction per leading column: Dynamics' documented default, then the
        organization's setting, then the mailbox's; a fixed field keeps its default."""
        result: dict[str, FieldDirection] = {}
        for leader in self.units():
            mapping = self._by_column[leader]
            wanted = mapping.direction
            if not mapping.fixed:
                wanted = (overrides or {}).get(leader, (organization or {}).get(leader, wanted))
            if mapping.to_outlook is None and wanted in FLOWS_TO_OUTLOOK:
                wanted = FieldDirection.TO_CRM if wanted is FieldDirection.TWO_WAY else FieldDirection.NONE
            result[leader] = wanted
        return result

    def fixed_columns(self) -> frozenset[str]:
        """The leading columns whose direction no setting may change."""
        return frozenset(leader for leader in self.units() if self._by_column[leader].fixed)

    def project(self, item: ItemT) -> Projection:
        """The CRM columns this item stands for, fitted to the column limits."""
        values: dict[str, CrmValue] = {}
        fitted: list[Fitted] = []
        for mapping in self.mappings:
            value = mapping.to_crm(item)
            if value is ABSENT:
                continue
            fitted_value, note = fit_crm_value(self.table, mapping.column, value)
            values[mapping.column] = fitted_value
            fitted.extend(note)
        return Projection(values, tuple(fitted))

    def apply(self, item: ItemT, values: Mapping[str, CrmValue]) -> ItemT:
        """Write CRM values onto a neutral item (columns that cannot flow to Outlook are ignored), in
        the map's column order, so a column read in the light of another (an appointment's times in
        the light of its all-day flag) sees that one already applied."""
        for mapping in self.mappings:
            if mapping.column in values and mapping.to_outlook is not None:
                item = mapping.to_outlook(item, values[mapping.column])
        return item

    def item_from_crm(self, values: Mapping[str, CrmValue]) -> ItemT:
        """A new neutral item for a CRM record that is not in Outlook yet (see :meth:`crm_skip_reason`)."""
        why = self.crm_skip_reason(values)
        if why is not None or self.blank is None:
            raise ValueError(why)
        return self.apply(self.blank(), values)

    def crm_skip_reason(self, values: Mapping[str, CrmValue]) -> str | None:
        """Why this CRM record cannot become an Outlook item, or None."""
        if self.blank is None:
            return f"{self.kind} records are never created in Outlook"
        missing = [column for column in self.required_from_crm if values.get(column) is None]
        return f"the CRM record has no {', '.join(missing)}" if missing else None

    def crm_values(self, record: Mapping[str, object]) -> dict[str, CrmValue]:
        """The mapped columns of a CRM record, canonicalised (what projections are compared with)."""
        return {column: canonical_crm_value(record.get(column)) for column in self.columns}


def fit_crm_value(table: str, column: str, value: CrmValue) -> tuple[CrmValue, list[Fitted]]:
    """Fit a column value, or every party address of a party list, to the contract's limits."""
    if isinstance(value, tuple):
        parties: list[PartySpec] = []
        notes: list[Fitted] = []
        for party in value:
            address, note = fit_value("activityparty", "addressused", party.address)
            parties.append(PartySpec(party.participation, address))
            if note:  # reported against the party list column, so callers can tell which one
                notes.append(Fitted(table, column, note.original_length, note.max_length))
        return tuple(sorted(parties)), notes
    if not isinstance(value, str):
        return value, []
    fitted, note = fit_value(table, column, value)
    return fitted, [note] if note else []


def canonical_crm_value(value: object) -> CrmValue:
    """Normalise a value read from the CRM: "" is null, lists of parties become sorted tuples."""
    if value == "":
        return None
    if isinstance(value, list | tuple):
        return tuple(sorted(_party(entry) for entry in value)) or None
    if value is None or isinstance(value, str | int | bool):
        return value
    raise TypeError(f"not a CRM column value: {type(value).__name__}")


def _party(entry: object) -> PartySpec:
    if isinstance(entry, PartySpec):
        return entry
    if isinstance(entry, list | tuple) and len(entry) == 2:
        return PartySpec(Participation(int(entry[0])), str(entry[1]))
    raise TypeError("a party is a PartySpec or a (participation, address) pair")


def to_jsonable(value: CrmValue) -> object:
    """JSON shape of a CRM value (parties as ``[participation, address]`` pairs)."""
    if isinstance(value, tuple):
        return [[party.participation, party.address] for party in value]
    return value


# One encoder for every fingerprint: ``json.dumps`` with these options builds a new one per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(values: Mapping[str, CrmValue]) -> str:
    """A short, stable digest of some column values: what link rows keep instead of the values.

    Link rows never hold bodies or addresses; equality is all a three-way merge needs of the base.
    Most units of an item are empty (a contact's 25 columns, two of them set): the digest of a unit
    whose columns are all null is computed once per set of columns (:data:`_EMPTY_PRINTS`).
    """
    if all(value is None for value in values.values()):
        columns = tuple(values)
        known = _EMPTY_PRINTS.get(columns)
        if known is None:
            known = _EMPTY_PRINTS[columns] = _digest(values)
        return known
    return _digest(values)


#: Fingerprints of all-null units by their columns (in order): as many as the field maps have units.
_EMPTY_PRINTS: dict[tuple[str, ...], str] = {}


def _digest(values: Mapping[str, CrmValue]) -> str:
    canonical = _CANONICAL.encode({column: to_jsonable(value) for column, value in values.items()})
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def crm_content_hash(field_map: FieldMap[ItemT], values: Mapping[str, CrmValue]) -> str:
    """Content hash of a CRM record over the mapped columns only (unmapped columns are not content)."""
    return fingerprint({column: values.get(column) for column in field_map.columns})


# --- value conversions shared by the kinds ----------------------------------------------------


def text(value: str | None) -> str | None:
    """Dataverse stores an empty string as null; so do projections."""
    return value or None


def utc_text(value: dt.datetime | None) -> str | None:
    """A UTC date-time as the Web API writes it: whole seconds, ``Z`` suffix."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(value: CrmValue) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("a CRM date-time is an ISO 8601 string")
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def as_text(value: CrmValue) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError("expected a string column value")


def as_int(value: CrmValue) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise TypeError("expected a choice (integer) column value")


def _check_attribute(model: type[ItemT], attribute: str) -> None:
    """Fail at import, not at the first sync, when a map names an attribute the model lacks."""
    if attribute not in model.model_fields:
        raise ValueError(f"{model.__name__} has no attribute {attribute!r}")


def text_column(
    model: type[ItemT],
    column: str,
    attribute: str,
    *,
    direction: FieldDirection = FieldDirection.TWO_WAY,
    fixed: bool = False,
) -> FieldMapping[ItemT]:
    """A string column that mirrors one optional string attribute of the neutral item."""
    _check_attribute(model, attribute)

    def to_crm(item: ItemT) -> CrmValue:
        value = getattr(item, attribute)
        return text(value) if isinstance(value, str) else None

    def to_outlook(item: ItemT, value: CrmValue) -> ItemT:
        return item.model_copy(update={attribute: as_text(value)})

    return FieldMapping(
        column, to_crm, to_outlook if direction in FLOWS_TO_OUTLOOK else None, direction, fixed
    )


def choice_column(
    model: type[ItemT],
    column: str,
    attribute: str,
    choices: Mapping[ChoiceT, int],
    *,
    direction: FieldDirection = FieldDirection.TWO_WAY,
    fixed: bool = False,
) -> FieldMapping[ItemT]:
    """A choice column for an enum attribute; CRM values without a neutral meaning change nothing."""
    _check_attribute(model, attribute)
    reverse = invert(choices)

    def to_crm(item: ItemT) -> CrmValue:
        return choices[getattr(item, attribute)]

    def to_outlook(item: ItemT, value: CrmValue) -> ItemT:
        choice = as_int(value)
        if choice is None or choice not in reverse:
            return item
        return item.model_copy(update={attribute: reverse[choice]})

    return FieldMapping(
        column, to_crm, to_outlook if direction in FLOWS_TO_OUTLOOK else None, direction, fixed
    )


def utc_column(
    model: type[ItemT], column: str, attribute: str, *, fixed: bool = False
) -> FieldMapping[ItemT]:
    """A two-way UTC date-time column; a null from the CRM clears an optional attribute only."""
    _check_attribute(model, attribute)
    required = model.model_fields[attribute].is_required()

    def to_crm(item: ItemT) -> CrmValue:
        return utc_text(getattr(item, attribute))

    def to_outlook(item: ItemT, value: CrmValue) -> ItemT:
        parsed = parse_utc(value)
        if parsed is None and required:
            return item
        return item.model_copy(update={attribute: parsed})

    return FieldMapping(column, to_crm, to_outlook, fixed=fixed)


def parties(participation: Participation, addresses: Iterable[str | None]) -> CrmValue:
    """A party list column value: one party per distinct address, addresses lower-cased; no parties
    is null, as an empty party list reads back from the CRM."""
    unique = {address.strip().lower() for address in addresses if address and address.strip()}
    return tuple(sorted(PartySpec(participation, address) for address in unique)) or None


def invert(choices: Mapping[ChoiceT, int]) -> dict[int, ChoiceT]:
    """Reverse a neutral-value -> choice-value table (first neutral value wins on duplicates)."""
    reverse: dict[int, ChoiceT] = {}
    for neutral, choice in choices.items():
        reverse.setdefault(choice, neutral)
    return reverse
