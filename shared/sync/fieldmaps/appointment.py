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
create. The organizer and the required / optional attendees are activity parties (to the CRM only,
fixed): Outlook owns a meeting's attendee list, and changing it from the CRM would send meeting
updates on the organizer's behalf. Resource attendees (rooms) are not parties; the location
carries the room.

Recurring series (Graph ``type``) are Dynamics series, handled before this map by
:mod:`shared.sync.series`: the *series master* becomes one ``recurringappointmentmaster``
(:mod:`shared.sync.fieldmaps.series`), and its *occurrences* and *exceptions* are linked to the
``appointment`` instances Dynamics expands (an exception updates its instance). This map writes
an occurrence only when its series has no Dynamics form (then each occurrence is one
appointment, with an audit note); a master never reaches it.
"""

from __future__ import annotations

import datetime as dt

from shared.domain.model import (
    Appointment,
    AttendeeType,
    EventKind,
    FieldDirection,
    ItemKind,
    Participation,
    ShowAs,
)
from shared.sync.fieldmaps.base import (
    PRIORITY_CODES,
    CrmValue,
    FieldMap,
    FieldMapping,
    as_int,
    choice_column,
    parties,
    text,
    text_column,
    utc_column,
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


def _all_day_to_outlook(event: Appointment, value: CrmValue) -> Appointment:
    return event.model_copy(update={"is_all_day": bool(value)})


def _attendees(kind: AttendeeType, participation: Participation) -> FieldMapping[Appointment]:
    def to_crm(event: Appointment) -> CrmValue:
        return parties(participation, (a.email.address for a in event.attendees if a.type is kind))

    return FieldMapping(f"{kind.value}attendees", to_crm, None, FieldDirection.TO_CRM, fixed=True)


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
        utc_column(Appointment, "scheduledstart", "start"),
        utc_column(Appointment, "scheduledend", "end"),
        FieldMapping("isalldayevent", lambda event: event.is_all_day, _all_day_to_outlook),
        text_column(Appointment, "location", "location"),
        text_column(Appointment, "description", "body"),
        FieldMapping(
            "globalobjectid", lambda event: text(event.ical_uid), None, FieldDirection.TO_CRM, fixed=True
        ),
        choice_column(Appointment, "prioritycode", "importance", PRIORITY_CODES),
        FieldMapping("statuscode", _status, _show_as_from_status, on_create=False),
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
