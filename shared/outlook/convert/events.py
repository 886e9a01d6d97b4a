"""Events: Graph ``event`` <-> the neutral :class:`~shared.domain.model.Appointment`.

An event's ``originalStartTimeZone`` travels in ``Appointment.time_zone`` so writes go back in the
zone the user created the event in.
"""

from __future__ import annotations

import json

from msgraph.generated.models.attendee import Attendee as GraphAttendee
from msgraph.generated.models.attendee_type import AttendeeType as GraphAttendeeType
from msgraph.generated.models.event import Event
from msgraph.generated.models.free_busy_status import FreeBusyStatus
from msgraph.generated.models.importance import Importance as GraphImportance
from msgraph.generated.models.location import Location
from msgraph.generated.models.patterned_recurrence import PatternedRecurrence

from shared.domain.model import (
    Appointment,
    Attendee,
    AttendeeType,
    EventKind,
    Importance,
    ItemKind,
    OutlookItem,
    ShowAs,
)
from shared.outlook.convert.common import (
    email_address_of,
    enum_value,
    graph_address,
    graph_json,
    is_removed,
    item_envelope,
    parse_graph_json,
    removed_item,
    text_body,
)
from shared.outlook.convert.times import floating, floating_date, from_utc, to_utc, writable_zone


def _recurrence_json(recurrence: PatternedRecurrence | None) -> str | None:
    if recurrence is None:
        return None
    return json.dumps(graph_json(recurrence), sort_keys=True, separators=(",", ":"))


def appointment_from_graph(event: Event) -> Appointment:
    read = floating_date if event.is_all_day else to_utc
    start, end = read(event.start), read(event.end)
    if start is None or end is None:
        raise ValueError("Graph event without start or end (select them)")
    attendees = []
    for attendee in event.attendees or ():
        address = email_address_of(attendee)
        if address is None:
            continue
        attendees.append(
            Attendee(
                email=address,
                type=AttendeeType(enum_value(attendee.type) or AttendeeType.REQUIRED.value),
                response=enum_value(attendee.status.response) if attendee.status else None,
            )
        )
    return Appointment(
        subject=event.subject,
        start=start,
        end=end,
        is_all_day=bool(event.is_all_day),
        time_zone=event.original_start_time_zone or None,
        location=(event.location.display_name or None) if event.location else None,
        body=(event.body.content or None) if event.body else None,
        organizer=email_address_of(event.organizer),
        attendees=tuple(attendees),
        ical_uid=event.i_cal_u_id,
        show_as=ShowAs(enum_value(event.show_as) or ShowAs.BUSY.value),
        importance=Importance(enum_value(event.importance) or Importance.NORMAL.value),
        event_kind=EventKind(enum_value(event.type) or EventKind.SINGLE.value),
        series_master_id=event.series_master_id,
        recurrence=_recurrence_json(event.recurrence),
        is_cancelled=bool(event.is_cancelled),
        original_start=event.original_start,
        is_organizer=event.is_organizer is not False,
    )


def appointment_item(mailbox_id: str, event: Event) -> OutlookItem:
    if is_removed(event):
        return removed_item(mailbox_id, event, ItemKind.APPOINTMENT)
    envelope = item_envelope(mailbox_id, event, ItemKind.APPOINTMENT)
    return OutlookItem(**envelope, item=appointment_from_graph(event))


def appointment_to_graph(appointment: Appointment) -> Event:
    """A Graph event body in the appointment's own time zone (UTC if it has none).

    All-day events are floating in Graph (midnight to midnight in whatever zone they are viewed in),
    so the neutral model holds their dates as midnight UTC (:func:`floating_date`) and they are
    written as midnight in the event's zone. Which UTC moments those dates are in the CRM is the
    field map's business: the CRM user's local midnights.
    """
    time_zone = writable_zone(appointment.time_zone)
    if appointment.is_all_day:
        start, end = floating(appointment.start, time_zone), floating(appointment.end, time_zone)
    else:
        start, end = from_utc(appointment.start, time_zone), from_utc(appointment.end, time_zone)
    event = Event(
        subject=appointment.subject,
        start=start,
        end=end,
        is_all_day=appointment.is_all_day,
        body=text_body(appointment.body),
        attendees=[
            GraphAttendee(
                email_address=graph_address(attendee.email), type=GraphAttendeeType(attendee.type.value)
            )
            for attendee in appointment.attendees
        ],
        show_as=FreeBusyStatus(appointment.show_as.value),
        importance=GraphImportance(appointment.importance.value),
    )
    # Always sent (empty when absent), so an update clears a location the CRM no longer has.
    event.location = Location(display_name=appointment.location or "")
    if appointment.recurrence is not None:
        event.recurrence = parse_graph_json(appointment.recurrence, PatternedRecurrence)
    return event
