"""Graph JSON (as msgraph-sdk parses it) <-> neutral model, both directions, incl. time zones."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from msgraph.generated.models.contact import Contact as GraphContact
from msgraph.generated.models.event import Event
from msgraph.generated.models.message import Message
from msgraph.generated.models.todo_task import TodoTask

from shared.domain.model import (
    Appointment,
    AttendeeType,
    Contact,
    Email,
    EmailAddress,
    EventKind,
    Importance,
    ItemKind,
    PhysicalAddress,
    ShowAs,
    Task,
    TaskStatus,
)
from shared.outlook.convert.common import CRM_ID_PROPERTY_ID, graph_json, parse_graph_json
from shared.outlook.convert.contacts import contact_item, contact_to_graph
from shared.outlook.convert.events import appointment_item, appointment_to_graph
from shared.outlook.convert.messages import email_item
from shared.outlook.convert.tasks import task_item, task_to_graph
from shared.outlook.convert.times import to_utc

MAILBOX = "7c1b1c3b-0000-4000-8000-000000000001"

EVENT_JSON: dict[str, Any] = {
    "@odata.etag": 'W/"ZlnW4RIAV06KYYwlrfNZvQAAKGWwbw=="',
    "id": "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0AZlnW4RIAV06KYYwlrfNZvQAAKGWwbwAA",
    "changeKey": "ZlnW4RIAV06KYYwlrfNZvQAAKGWwbw==",
    "categories": ["CRM"],
    "subject": "Quarterly review",
    "body": {"contentType": "text", "content": "Agenda attached"},
    "start": {"dateTime": "2026-07-01T09:00:00.0000000", "timeZone": "W. Europe Standard Time"},
    "end": {"dateTime": "2026-07-01T10:30:00.0000000", "timeZone": "W. Europe Standard Time"},
    "originalStartTimeZone": "W. Europe Standard Time",
    "isAllDay": False,
    "isCancelled": False,
    "showAs": "tentative",
    "importance": "high",
    "type": "seriesMaster",
    "iCalUId": "040000008200E00074C5B7101A82E008",
    "location": {"displayName": "Room 4"},
    "organizer": {"emailAddress": {"name": "Ada", "address": "ada@contoso.example"}},
    "attendees": [
        {
            "type": "optional",
            "status": {"response": "accepted", "time": "2026-06-01T10:00:00Z"},
            "emailAddress": {"name": "Bob", "address": "bob@contoso.example"},
        }
    ],
    "recurrence": {
        "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["wednesday"], "firstDayOfWeek": "sunday"},
        "range": {
            "type": "endDate",
            "startDate": "2026-07-01",
            "endDate": "2026-09-30",
            "recurrenceTimeZone": "W. Europe Standard Time",
        },
    },
    "singleValueExtendedProperties": [{"id": CRM_ID_PROPERTY_ID.upper(), "value": "crm-123"}],
}


def test_event_converts_to_utc_and_keeps_its_original_zone() -> None:
    item = appointment_item(MAILBOX, parse_graph_json(EVENT_JSON, Event))

    assert item.kind is ItemKind.APPOINTMENT
    assert item.change_key == "ZlnW4RIAV06KYYwlrfNZvQAAKGWwbw=="
    assert item.categories == ("CRM",)
    assert item.crm_id == "crm-123"
    appointment = item.item
    assert isinstance(appointment, Appointment)
    # Berlin is UTC+2 in July.
    assert appointment.start == dt.datetime(2026, 7, 1, 7, 0, tzinfo=dt.UTC)
    assert appointment.end == dt.datetime(2026, 7, 1, 8, 30, tzinfo=dt.UTC)
    assert appointment.time_zone == "W. Europe Standard Time"
    assert appointment.show_as is ShowAs.TENTATIVE
    assert appointment.importance is Importance.HIGH
    assert appointment.event_kind is EventKind.SERIES_MASTER
    assert appointment.location == "Room 4"
    assert appointment.organizer == EmailAddress(address="ada@contoso.example", name="Ada")
    assert appointment.attendees[0].type is AttendeeType.OPTIONAL
    assert appointment.attendees[0].response == "accepted"
    assert appointment.recurrence is not None
    assert json.loads(appointment.recurrence)["range"]["endDate"] == "2026-09-30"


def test_appointment_round_trips_through_graph_json_in_its_own_zone() -> None:
    original = appointment_item(MAILBOX, parse_graph_json(EVENT_JSON, Event)).item
    assert isinstance(original, Appointment)

    body = graph_json(appointment_to_graph(original))
    assert body["start"] == {"dateTime": "2026-07-01T09:00:00", "timeZone": "W. Europe Standard Time"}

    echoed = parse_graph_json(
        body | {"id": "x", "originalStartTimeZone": body["start"]["timeZone"], "type": "seriesMaster"}, Event
    )
    again = appointment_item(MAILBOX, echoed).item
    assert isinstance(again, Appointment)
    # Organizer, iCalUId and attendees' responses are Exchange's to set, never written.
    assert again.attendees[0].response is None
    assigned = {
        "organizer": original.organizer,
        "ical_uid": original.ical_uid,
        "attendees": original.attendees,
    }
    assert again.model_copy(update=assigned) == original


@pytest.mark.parametrize(
    ("wall_clock", "zone_name", "utc"),
    [
        (
            "2026-01-15T09:00:00.0000000",
            "Pacific Standard Time",
            dt.datetime(2026, 1, 15, 17, 0, tzinfo=dt.UTC),
        ),
        (
            "2026-07-15T09:00:00.0000000",
            "Pacific Standard Time",
            dt.datetime(2026, 7, 15, 16, 0, tzinfo=dt.UTC),
        ),
        ("2026-03-01T09:00:00.1234567", "UTC", dt.datetime(2026, 3, 1, 9, 0, 0, 123456, tzinfo=dt.UTC)),
        ("2026-03-01T09:00:00", "Europe/Paris", dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)),
    ],
)
def test_graph_wall_clock_times_become_utc(wall_clock: str, zone_name: str, utc: dt.datetime) -> None:
    from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone

    assert to_utc(DateTimeTimeZone(date_time=wall_clock, time_zone=zone_name)) == utc


def test_unknown_time_zone_is_a_clear_error() -> None:
    from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone

    with pytest.raises(ValueError, match="unknown time zone"):
        to_utc(DateTimeTimeZone(date_time="2026-01-01T00:00:00", time_zone="Mars Standard Time"))


def test_contact_round_trips() -> None:
    graph = {
        "id": "AAMkContact=",
        "changeKey": "EQAAABYAAAA",
        "parentFolderId": "AAMkContacts=",
        "givenName": "Grace",
        "surname": "Hopper",
        "displayName": "Grace Hopper",
        "emailAddresses": [{"name": "Grace", "address": "grace@navy.example"}],
        "businessPhones": ["+1 555 0100"],
        "homePhones": [],
        "mobilePhone": "+1 555 0101",
        "jobTitle": "Rear Admiral",
        "companyName": "US Navy",
        "businessAddress": {"street": "1 Navy Way", "city": "Arlington", "countryOrRegion": "US"},
        "homeAddress": {},
        "birthday": "1906-12-09T11:59:00Z",
        "personalNotes": "COBOL",
    }
    item = contact_item(MAILBOX, parse_graph_json(graph, GraphContact))
    contact = item.item
    assert item.folder_id == "AAMkContacts="
    assert contact == Contact(
        given_name="Grace",
        surname="Hopper",
        display_name="Grace Hopper",
        email_addresses=(EmailAddress(address="grace@navy.example", name="Grace"),),
        business_phone="+1 555 0100",
        mobile_phone="+1 555 0101",
        job_title="Rear Admiral",
        company_name="US Navy",
        business_address=PhysicalAddress(street="1 Navy Way", city="Arlington", country="US"),
        birthday=dt.date(1906, 12, 9),
        notes="COBOL",
    )
    echoed = parse_graph_json(graph_json(contact_to_graph(contact)) | {"id": "AAMkContact="}, GraphContact)
    assert contact_item(MAILBOX, echoed).item == contact


def test_task_round_trips() -> None:
    graph = {
        "id": "AAMkTask=",
        "title": "Call back",
        "body": {"contentType": "text", "content": "about the renewal"},
        "status": "inProgress",
        "importance": "low",
        "dueDateTime": {"dateTime": "2026-12-01T00:00:00.0000000", "timeZone": "UTC"},
        "categories": ["CRM"],
    }
    item = task_item(MAILBOX, parse_graph_json(graph, TodoTask), list_id="list-1")
    assert item.folder_id == "list-1"
    assert item.categories == ("CRM",)
    assert item.item == Task(
        subject="Call back",
        body="about the renewal",
        status=TaskStatus.IN_PROGRESS,
        importance=Importance.LOW,
        due=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
    )
    echoed = parse_graph_json(graph_json(task_to_graph(item.item)) | {"id": "AAMkTask="}, TodoTask)
    assert task_item(MAILBOX, echoed, list_id="list-1").item == item.item


def test_message_without_body_converts_for_tracking_decisions() -> None:
    graph = {
        "id": "AAMkMsg=",
        "changeKey": "CQAAABYAAAA",
        "parentFolderId": "AAMkSent=",
        "subject": "Offer",
        "from": {"emailAddress": {"name": "Me", "address": "Me@Contoso.example"}},
        "toRecipients": [{"emailAddress": {"name": "Client", "address": "client@fabrikam.example"}}],
        "ccRecipients": [],
        "sentDateTime": "2026-11-20T10:00:00Z",
        "receivedDateTime": "2026-11-20T10:00:01Z",
        "internetMessageId": "<abc@contoso.example>",
        "conversationId": "AAQkConv=",
        "isDraft": False,
        "hasAttachments": True,
    }
    item = email_item(MAILBOX, parse_graph_json(graph, Message), mailbox_address="me@contoso.example")
    email = item.item
    assert isinstance(email, Email)
    assert email.body is None
    assert email.is_outgoing
    assert email.has_attachments
    assert email.to == (EmailAddress(address="client@fabrikam.example", name="Client"),)
    assert email.sent == dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)
    assert item.crm_id is None


@pytest.mark.parametrize(
    ("model", "convert", "kind"),
    [
        (Message, lambda m: email_item(MAILBOX, m), ItemKind.EMAIL),
        (GraphContact, lambda m: contact_item(MAILBOX, m), ItemKind.CONTACT),
        (Event, lambda m: appointment_item(MAILBOX, m), ItemKind.APPOINTMENT),
        (TodoTask, lambda m: task_item(MAILBOX, m, list_id="l"), ItemKind.TASK),
    ],
)
def test_removed_delta_entries_become_removed_items(model: Any, convert: Any, kind: ItemKind) -> None:
    removed = parse_graph_json({"id": "gone=", "@removed": {"reason": "deleted"}}, model)
    item = convert(removed)
    assert (item.item_id, item.kind, item.removed, item.item) == ("gone=", kind, True, None)


def test_appointment_in_an_unknown_custom_zone_is_written_in_utc() -> None:
    start = dt.datetime(2026, 2, 1, 12, 0, tzinfo=dt.UTC)
    invitation = Appointment(subject="External", start=start, end=start, time_zone="Customized Time Zone")

    body = graph_json(appointment_to_graph(invitation))

    assert body["start"] == {"dateTime": "2026-02-01T12:00:00", "timeZone": "UTC"}
