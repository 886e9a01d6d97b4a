"""Outlook event <-> Dataverse ``appointment``.

Columns: ``subject``, ``scheduledstart`` / ``scheduledend`` (UTC), ``isalldayevent``,
``location`` and ``description`` are two-way; ``globalobjectid`` carries the event's iCalUId
(to the CRM only, fixed), which is also the natural key of the record: one CRM appointment per
meeting however many attendees' mailboxes hold a copy (see :mod:`shared.sync.fieldmaps.ids`).
Importance is ``prioritycode`` (the appointment table has no ``importance`` column in the
contract). Show-as is the status reason, as in Dynamics: Free and Tentative are *Open*, Busy and
Out of Office are *Scheduled*; a cancelled event is *Canceled*. ``statecode`` follows
``statuscode`` so the pair is always written together, and because the contract marks
``appointment.statecode`` not valid for create, the pair is set by an update right after the
create. The organizer (to the CRM only, fixed) and the required / optional attendees (both ways, fixed) are
activity parties. Attendees changed in Dynamics reach only the organizer's own event, as with
Server-Side Synchronization: Exchange then sends the invitations and updates, and an attendee's copy
is never written from the CRM. Resource attendees (rooms) are not parties; the location carries the
room.

Which directions an organization or a mailbox may change follows "What fields can be synchronized
with Outlook?" (Dynamics 365 admin guide): subject, location and body are settable; Appointment Time
(start, end, all day), Importance, Show Time As and the parties are fixed.

Recurring series (Graph ``type``) are Dynamics series, handled before this map by
:mod:`shared.sync.series`: the *series master* becomes one ``recurringappointmentmaster``
(:mod:`shared.sync.fieldmaps.series`), and its *occurrences* and *exceptions* are linked to the
``appointment`` instances Dynamics expands (an exception updates its instance). This map writes
an occurrence only when its series has no Dynamics form (then each occurrence is one
appointment, with an audit note); a master never reaches it.

All-day events: ``scheduledstart`` / ``scheduledend`` are UserLocal columns (a UTC moment shown in
the user's zone; "Behavior and format of the date and time column", power-apps/maker/data-platform/
behavior-format-date-time-field), so an all-day event's dates are stored as the CRM user's local
midnights (``usersettings.timezonecode``), falling back to the event's own zone, then UTC; read back,
the moments' local dates in that zone are the event's dates. Outlook's all-day dates are floating
(the neutral model holds them as midnight UTC, see :mod:`shared.outlook.convert.events`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from functools import cache
from zoneinfo import ZoneInfo

from shared.domain.model import (
    Appointment,
    Attendee,
    AttendeeType,
    EmailAddress,
    EventKind,
    FieldDirection,
    ItemKind,
    Participation,
    ShowAs,
)
from shared.domain.zones import known_zone, local_date, local_midnight
from shared.sync.fieldmaps.base import (
    PRIORITY_CODES,
    CrmValue,
    FieldMap,
    FieldMapping,
    PartySpec,
    as_int,
    choice_column,
    parse_utc,
    parties,
    text,
    text_column,
    utc_text,
)

# statuscode (status reason) per show-as; Dataverse has no "working elsewhere" or "unknown".
STATUS_OF_SHOW_AS: dict[ShowAs, int] = {
    ShowAs.FREE: 1,
    ShowAs.TENTATIVE: 2,
    ShowAs.BUSY: 5,
    ShowAs.OOF: 6,
    ShowAs.WORKING_ELSEWHERE: 5,
    ShowAs.UNKNOWN: 5,
}
STATUS_CANCELED = 4
STATE_OF_STATUS: dict[int, int] = {1: 0, 2: 0, 3: 1, 4: 2, 5: 3, 6: 3}  # statuscode -> statecode
_SHOW_AS_OF_STATUS: dict[int, ShowAs] = {1: ShowAs.FREE, 2: ShowAs.TENTATIVE, 5: ShowAs.BUSY, 6: ShowAs.OOF}

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _status(event: Appointment) -> int:
    return STATUS_CANCELED if event.is_cancelled else STATUS_OF_SHOW_AS[event.show_as]


def _show_as_from_status(event: Appointment, value: CrmValue) -> Appointment:
    """Completed (3) and Canceled (4) have no show-as: they leave the Outlook event as it is."""
    show_as = _SHOW_AS_OF_STATUS.get(as_int(value) or 0)
    return event.model_copy(update={"show_as": show_as}) if show_as else event


def _zone(event: Appointment, crm_time_zone: str | None) -> ZoneInfo:
    """The zone whose midnights bound an all-day event in the CRM: the CRM user's, else the event's."""
    return known_zone(crm_time_zone) or known_zone(event.time_zone) or ZoneInfo("UTC")


def _floating(moment: dt.datetime, where: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(local_date(moment, where), dt.time(), dt.UTC)


def _all_day_column(column: str, attribute: str, crm_time_zone: str | None) -> FieldMapping[Appointment]:
    """``scheduledstart`` / ``scheduledend``: exact moments, or an all-day event's local midnights."""

    def to_crm(event: Appointment) -> CrmValue:
        value: dt.datetime = getattr(event, attribute)
        if event.is_all_day:
            value = local_midnight(value.date(), _zone(event, crm_time_zone))
        return utc_text(value)

    def to_outlook(event: Appointment, value: CrmValue) -> Appointment:
        parsed = parse_utc(value)
        if parsed is None:
            return event  # an Outlook event needs both (required_from_crm)
        if event.is_all_day:
            parsed = _floating(parsed, _zone(event, crm_time_zone))
        return event.model_copy(update={attribute: parsed})

    return FieldMapping(column, to_crm, to_outlook, fixed=True)


def _all_day_flag(crm_time_zone: str | None) -> FieldMapping[Appointment]:
    """``isalldayevent``, applied before the times (map order); flipping it alone re-reads the
    event's times: exact moments become their local dates, dates their local midnights."""

    def to_outlook(event: Appointment, value: CrmValue) -> Appointment:
        all_day = bool(value)
        if all_day == event.is_all_day:
            return event
        where = _zone(event, crm_time_zone)
        if all_day:
            start, end = _floating(event.start, where), _floating(event.end, where)
            end = max(end, start + dt.timedelta(days=1))
        else:
            start, end = local_midnight(event.start.date(), where), local_midnight(event.end.date(), where)
        return event.model_copy(update={"is_all_day": all_day, "start": start, "end": end})

    return FieldMapping("isalldayevent", lambda event: event.is_all_day, to_outlook, fixed=True)


def _attendees(kind: AttendeeType, participation: Participation) -> FieldMapping[Appointment]:
    """The required or optional attendees: both ways, fixed. From the CRM they reach only the
    organizer's event (Exchange then sends the invitations and updates); the CRM -> Outlook run reads
    the party rows for the meetings the user organizes, other runs leave the column unread."""

    def to_crm(event: Appointment) -> CrmValue:
        return parties(participation, (a.email.address for a in event.attendees if a.type is kind))

    def to_outlook(event: Appointment, value: CrmValue) -> Appointment:
        specs = value if isinstance(value, tuple) else ()
        wanted = sorted(spec.address for spec in specs if isinstance(spec, PartySpec))
        kept = {a.email.address.lower(): a for a in event.attendees if a.type is kind}
        others = tuple(a for a in event.attendees if a.type is not kind)
        mine = tuple(kept.get(a) or Attendee(email=EmailAddress(address=a), type=kind) for a in wanted)
        return event.model_copy(update={"attendees": others + mine})

    return FieldMapping(f"{kind.value}attendees", to_crm, to_outlook, fixed=True)


def _organizer(event: Appointment) -> CrmValue:
    return parties(Participation.ORGANIZER, [event.organizer.address if event.organizer else None])


def _skip_reason(event: Appointment) -> str | None:
    # A master is written as a recurringappointmentmaster by shared.sync.series, never as an appointment.
    if event.event_kind is EventKind.SERIES_MASTER:
        return "series master: synchronised as a recurringappointmentmaster"
    return None


APPOINTMENT_MAP: FieldMap[Appointment] = FieldMap(
    ItemKind.APPOINTMENT,
    "appointment",
    (
        text_column(Appointment, "subject", "subject"),
        _all_day_flag(None),
        _all_day_column("scheduledstart", "start", None),
        _all_day_column("scheduledend", "end", None),
        text_column(Appointment, "location", "location"),
        text_column(Appointment, "description", "body"),
        FieldMapping(
            "globalobjectid", lambda event: text(event.ical_uid), None, FieldDirection.TO_CRM, fixed=True
        ),
        choice_column(Appointment, "prioritycode", "importance", PRIORITY_CODES, fixed=True),
        FieldMapping("statuscode", _status, _show_as_from_status, fixed=True, on_create=False),
        FieldMapping(
            "statecode",
            lambda event: STATE_OF_STATUS[_status(event)],
            None,
            FieldDirection.TO_CRM,
            follows="statuscode",
            on_create=False,
        ),
        FieldMapping("organizer", _organizer, None, FieldDirection.TO_CRM, fixed=True),
        _attendees(AttendeeType.REQUIRED, Participation.REQUIRED),
        _attendees(AttendeeType.OPTIONAL, Participation.OPTIONAL),
    ),
    blank=lambda: Appointment(start=_EPOCH, end=_EPOCH),
    required_from_crm=("scheduledstart", "scheduledend"),  # an Outlook event needs both
    unsyncable=_skip_reason,
)
"""Without a known CRM user zone, all-day dates are midnights in the event's own zone."""


@cache
def appointment_map(crm_time_zone: str) -> FieldMap[Appointment]:
    """The appointment map for a CRM user in ``crm_time_zone`` (Windows or IANA name)."""
    timed = {
        mapping.column: mapping
        for mapping in (
            _all_day_flag(crm_time_zone),
            _all_day_column("scheduledstart", "start", crm_time_zone),
            _all_day_column("scheduledend", "end", crm_time_zone),
        )
    }
    mappings = tuple(timed.get(mapping.column, mapping) for mapping in APPOINTMENT_MAP.mappings)
    return dataclasses.replace(APPOINTMENT_MAP, mappings=mappings)
