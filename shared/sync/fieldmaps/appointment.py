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

Which directions an organization or a mailbox may change follows "What fields can be synchronized
with Outlook?" (Dynamics 365 admin guide): subject, location and body are settable; Appointment Time
(start, end, all day), Importance, Show Time As and the parties are fixed.

Recurring series (Graph ``type``): Dynamics' ``recurringappointmentmaster`` table is outside our
contract, so a *series master* maps to one ordinary CRM appointment carrying the series' first
occurrence (Graph gives the master the first occurrence's start and end) and the master's
iCalUId; plain *occurrences* are not synchronised (the master stands for them); an *exception*
(a moved or edited occurrence) has its own iCalUId and becomes its own CRM appointment.
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
    # crmsync reads the calendar through calendarView delta, which returns a series as its
    # occurrences and exceptions in the window, never the master ("event: delta",
    # learn.microsoft.com/graph/api/event-delta); each occurrence has its own iCalUId ("event
    # resource type": different for each occurrence). So every instance in the window becomes its own
    # CRM appointment, and a master that arrives some other way is skipped rather than doubling the
    # first occurrence (recurringappointmentmaster is outside crmsync's Dataverse contract).
    if event.event_kind is EventKind.SERIES_MASTER:
        return "series master: its occurrences in the calendar window stand for it"
    return None


APPOINTMENT_MAP: FieldMap[Appointment] = FieldMap(
    ItemKind.APPOINTMENT,
    "appointment",
    (
        text_column(Appointment, "subject", "subject"),
        utc_column(Appointment, "scheduledstart", "start", fixed=True),
        utc_column(Appointment, "scheduledend", "end", fixed=True),
        FieldMapping("isalldayevent", lambda event: event.is_all_day, _all_day_to_outlook, fixed=True),
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
