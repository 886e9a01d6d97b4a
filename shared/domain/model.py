"""The neutral item model: what an Outlook item *means*, independent of Graph and of Dataverse.

``shared.outlook`` converts Graph objects to and from these; ``shared.sync.fieldmaps``
converts them to and from CRM columns. The engine plans on them and hashes them
(:func:`content_hash`) to recognise echoes of its own writes and real changes.

All datetimes are timezone-aware UTC; the Outlook time zone an event was created
in travels separately (``Appointment.time_zone``) so it can be written back.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("datetimes in the neutral model must be timezone-aware")
    return value.astimezone(dt.UTC)


UtcDatetime = Annotated[dt.datetime, AfterValidator(_utc)]


class ItemKind(enum.StrEnum):
    """The four Outlook item types crmsync synchronises (Dynamics' entity types)."""

    CONTACT = "contact"
    APPOINTMENT = "appointment"
    TASK = "task"
    EMAIL = "email"


class _Neutral(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EmailAddress(_Neutral):
    """An SMTP address with an optional display name. Never logged."""

    address: str
    name: str | None = None


class AttendeeType(enum.StrEnum):
    REQUIRED = "required"
    OPTIONAL = "optional"
    RESOURCE = "resource"


class Attendee(_Neutral):
    email: EmailAddress
    type: AttendeeType = AttendeeType.REQUIRED
    response: str | None = None  # Graph responseStatus.response: accepted, declined, ...


class PhysicalAddress(_Neutral):
    street: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


class Importance(enum.StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class ShowAs(enum.StrEnum):
    FREE = "free"
    TENTATIVE = "tentative"
    BUSY = "busy"
    OOF = "oof"
    WORKING_ELSEWHERE = "workingElsewhere"
    UNKNOWN = "unknown"


class TaskStatus(enum.StrEnum):
    NOT_STARTED = "notStarted"
    IN_PROGRESS = "inProgress"
    COMPLETED = "completed"
    WAITING_ON_OTHERS = "waitingOnOthers"
    DEFERRED = "deferred"


class EventKind(enum.StrEnum):
    """Graph event ``type``: a series is one master plus occurrences and exceptions."""

    SINGLE = "singleInstance"
    OCCURRENCE = "occurrence"
    EXCEPTION = "exception"
    SERIES_MASTER = "seriesMaster"


class Contact(_Neutral):
    kind: Literal[ItemKind.CONTACT] = ItemKind.CONTACT
    given_name: str | None = None
    middle_name: str | None = None
    surname: str | None = None
    display_name: str | None = None
    nickname: str | None = None
    email_addresses: tuple[EmailAddress, ...] = Field(default=(), max_length=3)
    business_phone: str | None = None
    home_phone: str | None = None
    mobile_phone: str | None = None
    business_fax: str | None = None
    job_title: str | None = None
    department: str | None = None
    company_name: str | None = None
    business_address: PhysicalAddress | None = None
    home_address: PhysicalAddress | None = None
    birthday: dt.date | None = None
    notes: str | None = None


class Appointment(_Neutral):
    kind: Literal[ItemKind.APPOINTMENT] = ItemKind.APPOINTMENT
    subject: str | None = None
    start: UtcDatetime
    end: UtcDatetime
    is_all_day: bool = False
    time_zone: str | None = None  # originalStartTimeZone (Windows or IANA name)
    location: str | None = None
    body: str | None = None
    organizer: EmailAddress | None = None
    attendees: tuple[Attendee, ...] = ()
    ical_uid: str | None = None
    show_as: ShowAs = ShowAs.BUSY
    importance: Importance = Importance.NORMAL
    event_kind: EventKind = EventKind.SINGLE
    series_master_id: str | None = None
    recurrence: str | None = None  # canonical JSON of Graph patternedRecurrence
    is_cancelled: bool = False
    # An occurrence's or exception's place in its series (Graph originalStart): it names the CRM
    # instance, it is not content (left out of dumps and so of the content hash).
    original_start: UtcDatetime | None = Field(default=None, exclude=True)
    # Graph isOrganizer: False on an invitee's copy of somebody else's meeting. Not content either.
    is_organizer: bool = Field(default=True, exclude=True)


class Task(_Neutral):
    kind: Literal[ItemKind.TASK] = ItemKind.TASK
    subject: str | None = None
    body: str | None = None
    start: UtcDatetime | None = None
    due: UtcDatetime | None = None
    completed: UtcDatetime | None = None
    status: TaskStatus = TaskStatus.NOT_STARTED
    importance: Importance = Importance.NORMAL


class Email(_Neutral):
    kind: Literal[ItemKind.EMAIL] = ItemKind.EMAIL
    subject: str | None = None
    body: str | None = None  # None until fetched: only tracked mail has its body read
    body_is_html: bool = False
    sender: EmailAddress | None = None
    to: tuple[EmailAddress, ...] = ()
    cc: tuple[EmailAddress, ...] = ()
    bcc: tuple[EmailAddress, ...] = ()
    sent: UtcDatetime | None = None
    received: UtcDatetime | None = None
    internet_message_id: str | None = None
    conversation_id: str | None = None
    is_outgoing: bool = False
    is_draft: bool = False
    has_attachments: bool = False


NeutralItem = Annotated[Contact | Appointment | Task | Email, Field(discriminator="kind")]


class OutlookItem(_Neutral):
    """One Outlook item as a delta page reports it, wrapped around its neutral content.

    ``item`` is ``None`` when Graph reported the item ``@removed``. ``crm_id`` is the
    CRM record id stamped on the item as a single-value extended property, so a
    link survives a lost link map.
    """

    mailbox_id: str
    item_id: str  # immutable id
    kind: ItemKind
    change_key: str | None = None
    folder_id: str | None = None
    categories: tuple[str, ...] = ()
    crm_id: str | None = None
    removed: bool = False
    item: NeutralItem | None = None


def content_hash(item: Contact | Appointment | Task | Email) -> str:
    """A stable SHA-256 over the item's content: equal content, equal hash, on any machine."""
    canonical = json.dumps(item.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class Participation(enum.IntEnum):
    """An activity party's role: ``activityparty.participationtypemask`` (ActivityParty table reference)."""

    SENDER = 1
    TO = 2
    CC = 3
    BCC = 4
    REQUIRED = 5
    OPTIONAL = 6
    ORGANIZER = 7
    REGARDING = 8
    OWNER = 9
    RESOURCE = 10
    CUSTOMER = 11


class FieldDirection(enum.StrEnum):
    """Per-field sync direction, as in Dynamics' Outlook synchronization settings."""

    TWO_WAY = "two_way"
    TO_CRM = "to_crm"
    TO_OUTLOOK = "to_outlook"
    NONE = "none"


class TrackingRule(enum.StrEnum):
    """Dynamics' automatic email tracking options (personal options, Email tab)."""

    NONE = "none"
    ALL = "all"
    RESPONSES_TO_CRM = "responses_to_crm"
    FROM_CRM_RECORDS = "from_crm_records"  # leads, contacts and accounts
    FROM_EMAIL_ENABLED = "from_email_enabled"
