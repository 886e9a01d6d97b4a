"""Neutral items for the field-map tests: one per value of every enum a map turns into a choice."""

from __future__ import annotations

import datetime as dt
import itertools

from shared.domain.model import (
    Appointment,
    Attendee,
    AttendeeType,
    Contact,
    Email,
    EmailAddress,
    EventKind,
    Importance,
    PhysicalAddress,
    ShowAs,
    Task,
    TaskStatus,
)

START = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC)
END = START + dt.timedelta(hours=1)


def contacts() -> list[Contact]:
    full = Contact(
        given_name="Ada",
        middle_name="K",
        surname="Lovelace",
        nickname="Countess",
        email_addresses=(
            EmailAddress(address="ada@example.com", name="Ada"),
            EmailAddress(address="ada@home.example"),
            EmailAddress(address="countess@example.org"),
        ),
        business_phone="+44 20 7946 0000",
        home_phone="+44 20 7946 0001",
        mobile_phone="+44 7700 900000",
        business_fax="+44 20 7946 0002",
        job_title="Analyst",
        department="Engines",
        business_address=PhysicalAddress(
            street="1 Analytical Way", city="London", state="LDN", postal_code="N1 9GU", country="UK"
        ),
        home_address=PhysicalAddress(street="2 Home St", city="Ockham", country="UK"),
        birthday=dt.date(1815, 12, 10),
        notes="Met at the Difference Engine demo." * 100,  # over description's 2000
    )
    return [Contact(), full]


def appointments() -> list[Appointment]:
    items = []
    for show_as, importance, cancelled in itertools.product(ShowAs, Importance, (False, True)):
        items.append(
            Appointment(
                subject="Design review " * 20,  # over subject's 200
                start=START,
                end=END,
                location="Room 1",
                body="Agenda",
                organizer=EmailAddress(address="Organizer@Example.com"),
                attendees=(
                    Attendee(email=EmailAddress(address="req@example.com")),
                    Attendee(email=EmailAddress(address="opt@example.com"), type=AttendeeType.OPTIONAL),
                    Attendee(email=EmailAddress(address="room@example.com"), type=AttendeeType.RESOURCE),
                ),
                ical_uid="040000008200E00074C5B7101A82E008",
                show_as=show_as,
                importance=importance,
                is_cancelled=cancelled,
            )
        )
    items.append(Appointment(start=START, end=END, is_all_day=True, event_kind=EventKind.EXCEPTION))
    return items


def tasks() -> list[Task]:
    return [
        Task(
            subject="Call back",
            body="About the renewal",
            start=START,
            due=END,
            completed=END if status is TaskStatus.COMPLETED else None,
            status=status,
            importance=importance,
        )
        for status, importance in itertools.product(TaskStatus, Importance)
    ]


def emails() -> list[Email]:
    return [
        Email(
            subject="Renewal",
            body="Hello" if outgoing else None,
            sender=EmailAddress(address="sender@example.com"),
            to=(EmailAddress(address="to@example.com"),),
            cc=(EmailAddress(address="cc@example.com"),),
            bcc=(EmailAddress(address="bcc@example.com"),) if outgoing else (),
            sent=START,
            internet_message_id="<CAF=abc@mail.example.com>",
            is_outgoing=outgoing,
        )
        for outgoing in (False, True)
    ]
