"""Conversion between msgraph-sdk models and crmsync's neutral model (``shared.domain.model``).

Graph gives times as ``dateTimeTimeZone`` (a wall-clock ``dateTime`` plus a Windows or IANA zone
name; learn.microsoft.com/graph/api/resources/datetimetimezone); the neutral model holds aware UTC.
Windows zone names are mapped to IANA with the CLDR ``windowsZones`` table (the common ones below).
An event's ``originalStartTimeZone`` travels in ``Appointment.time_zone`` so writes go back in the
zone the user created the event in.

The CRM id stamped on items is a single-value extended property (learn.microsoft.com/graph/api/
resources/singlevaluelegacyextendedproperty, "String {GUID} Name <name>" form); it is read here
and written by :mod:`shared.outlook.writers`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kiota_abstractions.serialization import Parsable, ParsableFactory
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
from kiota_serialization_json.json_serialization_writer_factory import JsonSerializationWriterFactory
from msgraph.generated.models.attendee import Attendee as GraphAttendee
from msgraph.generated.models.attendee_type import AttendeeType as GraphAttendeeType
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.contact import Contact as GraphContact
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.email_address import EmailAddress as GraphEmailAddress
from msgraph.generated.models.event import Event
from msgraph.generated.models.free_busy_status import FreeBusyStatus
from msgraph.generated.models.importance import Importance as GraphImportance
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.location import Location
from msgraph.generated.models.message import Message
from msgraph.generated.models.patterned_recurrence import PatternedRecurrence
from msgraph.generated.models.physical_address import PhysicalAddress as GraphPhysicalAddress
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.models.single_value_legacy_extended_property import (
    SingleValueLegacyExtendedProperty,
)
from msgraph.generated.models.task_status import TaskStatus as GraphTaskStatus
from msgraph.generated.models.todo_task import TodoTask

from shared.domain.model import (
    Appointment,
    Attendee,
    AttendeeType,
    Contact,
    Email,
    EmailAddress,
    EventKind,
    Importance,
    ItemKind,
    OutlookItem,
    PhysicalAddress,
    ShowAs,
    Task,
    TaskStatus,
)

# The one extended property crmsync stamps: the CRM record id. The GUID is crmsync's own
# property-set id; it never changes, or stamped items would lose their link.
CRM_ID_PROPERTY_ID = "String {5c7d3a0e-2b8f-4e61-9a4d-c3f1e2b7a915} Name crmsync.crmid"

# CLDR windowsZones.xml, territory "001" (the primary IANA zone of each Windows zone).
WINDOWS_TO_IANA: dict[str, str] = {
    "UTC": "UTC",
    "Coordinated Universal Time": "UTC",
    "tzone://Microsoft/Utc": "UTC",
    "GMT Standard Time": "Europe/London",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "W. Europe Standard Time": "Europe/Berlin",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "Romance Standard Time": "Europe/Paris",
    "E. Europe Standard Time": "Europe/Chisinau",
    "FLE Standard Time": "Europe/Kiev",
    "GTB Standard Time": "Europe/Bucharest",
    "Russian Standard Time": "Europe/Moscow",
    "Turkey Standard Time": "Europe/Istanbul",
    "Israel Standard Time": "Asia/Jerusalem",
    "South Africa Standard Time": "Africa/Johannesburg",
    "Arabian Standard Time": "Asia/Dubai",
    "India Standard Time": "Asia/Calcutta",
    "China Standard Time": "Asia/Shanghai",
    "Singapore Standard Time": "Asia/Singapore",
    "Tokyo Standard Time": "Asia/Tokyo",
    "Korea Standard Time": "Asia/Seoul",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "New Zealand Standard Time": "Pacific/Auckland",
    "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver",
    "US Mountain Standard Time": "America/Phoenix",
    "Pacific Standard Time": "America/Los_Angeles",
    "Alaskan Standard Time": "America/Anchorage",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Atlantic Standard Time": "America/Halifax",
    "Canada Central Standard Time": "America/Regina",
    "E. South America Standard Time": "America/Sao_Paulo",
    "Argentina Standard Time": "America/Buenos_Aires",
    "Central Standard Time (Mexico)": "America/Mexico_City",
}

_FRACTION = re.compile(r"(\.\d{6})\d+")
_JSON_PARSER = JsonParseNodeFactory()
_JSON_WRITER = JsonSerializationWriterFactory()
_P = TypeVar("_P", bound=Parsable)


# --- shared helpers ------------------------------------------------------------------------------


def zone(name: str) -> ZoneInfo:
    """The IANA zone for a Windows or IANA zone name as Graph reports it."""
    try:
        return ZoneInfo(WINDOWS_TO_IANA.get(name, name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def to_utc(value: DateTimeTimeZone | None) -> dt.datetime | None:
    """Graph's wall-clock ``dateTime`` in ``timeZone`` as an aware UTC datetime."""
    if value is None or not value.date_time:
        return None
    # Graph sends 7 fractional digits ("2024-03-01T09:00:00.0000000"); Python takes at most 6.
    naive = dt.datetime.fromisoformat(_FRACTION.sub(r"\1", value.date_time.rstrip("Z")))
    if naive.tzinfo is not None:
        return naive.astimezone(dt.UTC)
    return naive.replace(tzinfo=zone(value.time_zone or "UTC")).astimezone(dt.UTC)


def from_utc(value: dt.datetime, time_zone: str | None) -> DateTimeTimeZone:
    """An aware datetime as Graph's ``dateTimeTimeZone``, wall clock in ``time_zone`` (default UTC)."""
    name = time_zone or "UTC"
    local = value.astimezone(zone(name)).replace(tzinfo=None)
    return DateTimeTimeZone(date_time=local.isoformat(timespec="seconds"), time_zone=name)


def graph_json(value: Parsable) -> dict[str, Any]:
    """A Graph model serialised with kiota's JSON writer, as a plain dict."""
    writer = _JSON_WRITER.get_serialization_writer("application/json")
    writer.write_object_value(None, value)
    parsed: dict[str, Any] = json.loads(writer.get_serialized_content())
    return parsed


def parse_graph_json(payload: bytes | str | dict[str, Any], model: ParsableFactory[_P]) -> _P:
    """Parse Graph JSON into an msgraph-sdk model exactly as the SDK parses a response."""
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    parsed: _P | None = _JSON_PARSER.get_root_parse_node("application/json", payload).get_object_value(model)
    if parsed is None:
        raise ValueError("empty Graph payload")
    return parsed


def _enum_value(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _address(recipient: Recipient | GraphEmailAddress | None) -> EmailAddress | None:
    email = recipient.email_address if isinstance(recipient, Recipient) else recipient
    if email is None or not email.address:
        return None
    return EmailAddress(address=email.address, name=email.name or None)


def _addresses(recipients: Iterable[Recipient | GraphEmailAddress] | None) -> tuple[EmailAddress, ...]:
    found = (_address(recipient) for recipient in recipients or ())
    return tuple(address for address in found if address is not None)


def _graph_address(address: EmailAddress) -> GraphEmailAddress:
    return GraphEmailAddress(address=address.address, name=address.name)


def _first(values: Sequence[str] | None) -> str | None:
    return values[0] if values else None


def _text_body(content: str | None) -> ItemBody:
    """A plain-text body; an empty one when there is none, so an update clears the old text."""
    return ItemBody(content_type=BodyType.Text, content=content or "")


def crm_id_of(properties: Iterable[SingleValueLegacyExtendedProperty] | None) -> str | None:
    """The stamped CRM id among an item's expanded single-value extended properties."""
    for prop in properties or ():
        if prop.id and prop.id.casefold() == CRM_ID_PROPERTY_ID.casefold():
            return prop.value or None
    return None


def is_removed(model: Any) -> bool:
    """Delta responses mark deleted (or moved-out) items with an ``@removed`` annotation."""
    return "@removed" in (getattr(model, "additional_data", None) or {})


def _envelope(mailbox_id: str, model: Any, kind: ItemKind) -> dict[str, Any]:
    """The Graph-generic part of an :class:`OutlookItem`: ids, change key, folder, categories."""
    if not model.id:
        raise ValueError(f"Graph {kind.value} without an id")
    return {
        "mailbox_id": mailbox_id,
        "item_id": model.id,
        "kind": kind,
        "change_key": getattr(model, "change_key", None),
        "folder_id": getattr(model, "parent_folder_id", None),
        "categories": tuple(getattr(model, "categories", None) or ()),
        "crm_id": crm_id_of(getattr(model, "single_value_extended_properties", None)),
    }


def _removed(mailbox_id: str, model: Any, kind: ItemKind) -> OutlookItem:
    if not model.id:
        raise ValueError(f"removed Graph {kind.value} without an id")
    return OutlookItem(mailbox_id=mailbox_id, item_id=model.id, kind=kind, removed=True)


# --- Graph -> neutral ----------------------------------------------------------------------------


def _physical(address: GraphPhysicalAddress | None) -> PhysicalAddress | None:
    if address is None:
        return None
    fields = {
        "street": address.street or None,
        "city": address.city or None,
        "state": address.state or None,
        "postal_code": address.postal_code or None,
        "country": address.country_or_region or None,
    }
    return PhysicalAddress(**fields) if any(fields.values()) else None


def contact_from_graph(contact: GraphContact) -> Contact:
    return Contact(
        given_name=contact.given_name,
        middle_name=contact.middle_name,
        surname=contact.surname,
        display_name=contact.display_name,
        nickname=contact.nick_name,
        email_addresses=_addresses(contact.email_addresses)[:3],
        business_phone=_first(contact.business_phones),
        home_phone=_first(contact.home_phones),
        mobile_phone=contact.mobile_phone or None,
        job_title=contact.job_title,
        department=contact.department,
        company_name=contact.company_name,
        business_address=_physical(contact.business_address),
        home_address=_physical(contact.home_address),
        birthday=contact.birthday.astimezone(dt.UTC).date() if contact.birthday else None,
        notes=contact.personal_notes or None,
    )


def _recurrence_json(recurrence: PatternedRecurrence | None) -> str | None:
    if recurrence is None:
        return None
    return json.dumps(graph_json(recurrence), sort_keys=True, separators=(",", ":"))


def appointment_from_graph(event: Event) -> Appointment:
    start, end = to_utc(event.start), to_utc(event.end)
    if start is None or end is None:
        raise ValueError("Graph event without start or end (select them)")
    attendees = []
    for attendee in event.attendees or ():
        address = _address(attendee)
        if address is None:
            continue
        attendees.append(
            Attendee(
                email=address,
                type=AttendeeType(_enum_value(attendee.type) or AttendeeType.REQUIRED.value),
                response=_enum_value(attendee.status.response) if attendee.status else None,
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
        organizer=_address(event.organizer),
        attendees=tuple(attendees),
        ical_uid=event.i_cal_u_id,
        show_as=ShowAs(_enum_value(event.show_as) or ShowAs.BUSY.value),
        importance=Importance(_enum_value(event.importance) or Importance.NORMAL.value),
        event_kind=EventKind(_enum_value(event.type) or EventKind.SINGLE.value),
        series_master_id=event.series_master_id,
        recurrence=_recurrence_json(event.recurrence),
        is_cancelled=bool(event.is_cancelled),
    )


def task_from_graph(task: TodoTask) -> Task:
    return Task(
        subject=task.title,
        body=(task.body.content or None) if task.body else None,
        start=to_utc(task.start_date_time),
        due=to_utc(task.due_date_time),
        completed=to_utc(task.completed_date_time),
        status=TaskStatus(_enum_value(task.status) or TaskStatus.NOT_STARTED.value),
        importance=Importance(_enum_value(task.importance) or Importance.NORMAL.value),
    )


def email_from_graph(message: Message, *, mailbox_address: str | None = None) -> Email:
    """The tracking-relevant view of a message; ``body`` only if the message was read with it.

    ``is_outgoing`` compares the sender with ``mailbox_address`` (the mailbox's own SMTP address).
    """
    sender = _address(message.from_) or _address(message.sender)
    body = message.body.content if message.body else None
    return Email(
        subject=message.subject,
        body=body,
        body_is_html=bool(message.body and _enum_value(message.body.content_type) == "html"),
        sender=sender,
        to=_addresses(message.to_recipients),
        cc=_addresses(message.cc_recipients),
        bcc=_addresses(message.bcc_recipients),
        sent=message.sent_date_time,
        received=message.received_date_time,
        internet_message_id=message.internet_message_id,
        conversation_id=message.conversation_id,
        is_outgoing=bool(
            sender and mailbox_address and sender.address.casefold() == mailbox_address.casefold()
        ),
        is_draft=bool(message.is_draft),
        has_attachments=bool(message.has_attachments),
    )


def contact_item(mailbox_id: str, contact: GraphContact) -> OutlookItem:
    if is_removed(contact):
        return _removed(mailbox_id, contact, ItemKind.CONTACT)
    return OutlookItem(**_envelope(mailbox_id, contact, ItemKind.CONTACT), item=contact_from_graph(contact))


def appointment_item(mailbox_id: str, event: Event) -> OutlookItem:
    if is_removed(event):
        return _removed(mailbox_id, event, ItemKind.APPOINTMENT)
    envelope = _envelope(mailbox_id, event, ItemKind.APPOINTMENT)
    return OutlookItem(**envelope, item=appointment_from_graph(event))


def task_item(mailbox_id: str, task: TodoTask, *, list_id: str) -> OutlookItem:
    """A To Do task; its ``folder_id`` is the task list (To Do has no change keys)."""
    if is_removed(task):
        return _removed(mailbox_id, task, ItemKind.TASK)
    envelope = _envelope(mailbox_id, task, ItemKind.TASK) | {"folder_id": list_id}
    return OutlookItem(**envelope, item=task_from_graph(task))


def email_item(mailbox_id: str, message: Message, *, mailbox_address: str | None = None) -> OutlookItem:
    if is_removed(message):
        return _removed(mailbox_id, message, ItemKind.EMAIL)
    envelope = _envelope(mailbox_id, message, ItemKind.EMAIL)
    return OutlookItem(**envelope, item=email_from_graph(message, mailbox_address=mailbox_address))


# --- neutral -> Graph ----------------------------------------------------------------------------


def _graph_physical(address: PhysicalAddress | None) -> GraphPhysicalAddress | None:
    if address is None:
        return None
    return GraphPhysicalAddress(
        street=address.street,
        city=address.city,
        state=address.state,
        postal_code=address.postal_code,
        country_or_region=address.country,
    )


# Contact properties written as JSON null when the neutral value is None, so an update clears them
# (kiota leaves ``None`` attributes out of the body, which would keep the old Outlook value).
_CONTACT_NULLABLE = {
    "given_name": "givenName",
    "middle_name": "middleName",
    "surname": "surname",
    "nickname": "nickName",
    "mobile_phone": "mobilePhone",
    "job_title": "jobTitle",
    "department": "department",
    "company_name": "companyName",
    "notes": "personalNotes",
    "birthday": "birthday",
}


def contact_to_graph(contact: Contact) -> GraphContact:
    """A complete Graph contact body for create/update: absent values clear the Outlook value.

    Graph has no fax field: ``business_fax`` stays in the CRM. ``displayName`` is left to Exchange
    when the CRM has none (Exchange composes it from the name parts).
    """
    graph = GraphContact(
        given_name=contact.given_name,
        middle_name=contact.middle_name,
        surname=contact.surname,
        display_name=contact.display_name,
        nick_name=contact.nickname,
        email_addresses=[_graph_address(address) for address in contact.email_addresses],
        business_phones=[contact.business_phone] if contact.business_phone else [],
        home_phones=[contact.home_phone] if contact.home_phone else [],
        mobile_phone=contact.mobile_phone,
        job_title=contact.job_title,
        department=contact.department,
        company_name=contact.company_name,
        business_address=_graph_physical(contact.business_address) or GraphPhysicalAddress(),
        home_address=_graph_physical(contact.home_address) or GraphPhysicalAddress(),
        # Outlook stores birthdays at 11:59 UTC so that no time zone moves them to another day.
        birthday=(
            dt.datetime.combine(contact.birthday, dt.time(11, 59), tzinfo=dt.UTC)
            if contact.birthday
            else None
        ),
        personal_notes=contact.notes,
    )
    graph.additional_data.update(
        {name: None for field, name in _CONTACT_NULLABLE.items() if getattr(contact, field) is None}
    )
    return graph


def writable_zone(name: str | None) -> str | None:
    """``name`` if crmsync can compute wall clocks in it, else ``None`` (write in UTC).

    Invitations from other systems can carry zones Graph reports as custom names
    ("Customized Time Zone", ``tzone://Microsoft/Custom``); such an event is still written, in UTC.
    """
    if name is None:
        return None
    try:
        zone(name)
    except ValueError:
        return None
    return name


def _floating(value: dt.datetime, time_zone: str | None) -> DateTimeTimeZone:
    """An all-day boundary: the UTC date's midnight as wall clock in the event's zone, unconverted."""
    return DateTimeTimeZone(date_time=f"{value.date().isoformat()}T00:00:00", time_zone=time_zone or "UTC")


def appointment_to_graph(appointment: Appointment) -> Event:
    """A Graph event body in the appointment's own time zone (UTC if it has none).

    All-day events are floating in Graph (midnight to midnight in whatever zone they are viewed in;
    read without ``Prefer: outlook.timezone`` they come back as midnight UTC), so the neutral model
    holds their dates as midnight UTC and they are written as midnight in the event's zone.
    """
    time_zone = writable_zone(appointment.time_zone)
    if appointment.is_all_day:
        start, end = _floating(appointment.start, time_zone), _floating(appointment.end, time_zone)
    else:
        start, end = from_utc(appointment.start, time_zone), from_utc(appointment.end, time_zone)
    event = Event(
        subject=appointment.subject,
        start=start,
        end=end,
        is_all_day=appointment.is_all_day,
        body=_text_body(appointment.body),
        attendees=[
            GraphAttendee(
                email_address=_graph_address(attendee.email), type=GraphAttendeeType(attendee.type.value)
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


def task_to_graph(task: Task) -> TodoTask:
    """A To Do task body; times go as UTC wall clock, which To Do accepts for every field."""
    todo = TodoTask(
        title=task.subject,
        body=_text_body(task.body),
        status=GraphTaskStatus(task.status.value),
        importance=GraphImportance(task.importance.value),
    )
    if task.start is not None:
        todo.start_date_time = from_utc(task.start, None)
    if task.due is not None:
        todo.due_date_time = from_utc(task.due, None)
    if task.completed is not None:
        todo.completed_date_time = from_utc(task.completed, None)
    return todo
