"""Field maps: round trips, the kind-specific choices, deterministic ids and natural keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid

import pytest

from shared.domain.model import (
    Appointment,
    Contact,
    Email,
    EmailAddress,
    EventKind,
    FieldDirection,
    ItemKind,
    PhysicalAddress,
    ShowAs,
    Task,
    TaskStatus,
)
from shared.sync.fieldmaps import (
    ABSENT,
    APPOINTMENT_MAP,
    CONTACT_MAP,
    EMAIL_MAP,
    TASK_MAP,
    FieldMap,
    FieldMapping,
    PartySpec,
    canonical_crm_value,
    crm_record_id,
    fingerprint,
    natural_key,
    normalize_message_id,
)
from shared.sync.fieldmaps.base import parse_utc
from tests.sync import samples


def _flows_back(field_map: FieldMap[Contact] | FieldMap[Appointment] | FieldMap[Task]) -> list[str]:
    return [m.column for m in field_map.mappings if m.to_outlook is not None]


def test_contact_round_trips_through_crm_columns() -> None:
    full = samples.contacts()[1].model_copy(update={"notes": "Short notes"})
    rebuilt = CONTACT_MAP.item_from_crm(CONTACT_MAP.project(full).values)
    assert CONTACT_MAP.project(rebuilt).values == CONTACT_MAP.project(full).values
    assert rebuilt.business_address == full.business_address
    assert rebuilt.birthday == dt.date(1815, 12, 10)


@pytest.mark.parametrize("task", samples.tasks(), ids=lambda t: f"{t.status}-{t.importance}")
def test_task_round_trips_through_crm_columns(task: Task) -> None:
    rebuilt = TASK_MAP.item_from_crm(TASK_MAP.project(task).values)
    assert (rebuilt.status, rebuilt.importance, rebuilt.due, rebuilt.subject) == (
        task.status,
        task.importance,
        task.due,
        task.subject,
    )


@pytest.mark.parametrize("show_as", [ShowAs.FREE, ShowAs.TENTATIVE, ShowAs.BUSY, ShowAs.OOF])
def test_appointment_round_trips_its_show_as(show_as: ShowAs) -> None:
    event = Appointment(
        subject="Sync", start=samples.START, end=samples.END, show_as=show_as, location="Oslo"
    )
    values = APPOINTMENT_MAP.project(event).values
    rebuilt = APPOINTMENT_MAP.item_from_crm(values)
    assert (rebuilt.show_as, rebuilt.start, rebuilt.end, rebuilt.location) == (
        show_as,
        event.start,
        event.end,
        "Oslo",
    )


def test_appointment_status_follows_show_as_and_cancellation() -> None:
    event = Appointment(start=samples.START, end=samples.END)
    status = {
        show_as: APPOINTMENT_MAP.project(event.model_copy(update={"show_as": show_as})).values["statuscode"]
        for show_as in ShowAs
    }
    assert status == {
        ShowAs.FREE: 1,
        ShowAs.TENTATIVE: 2,
        ShowAs.BUSY: 5,
        ShowAs.OOF: 6,
        ShowAs.WORKING_ELSEWHERE: 5,
        ShowAs.UNKNOWN: 5,
    }
    cancelled = APPOINTMENT_MAP.project(event.model_copy(update={"is_cancelled": True})).values
    assert (cancelled["statecode"], cancelled["statuscode"]) == (2, 4)


def test_completed_or_canceled_crm_appointment_leaves_show_as_alone() -> None:
    event = Appointment(start=samples.START, end=samples.END, show_as=ShowAs.TENTATIVE)
    for status in (3, 4):
        assert APPOINTMENT_MAP.apply(event, {"statuscode": status}).show_as is ShowAs.TENTATIVE


def test_appointment_times_are_utc_whole_seconds() -> None:
    start = dt.datetime(2026, 3, 29, 3, 30, 15, 999_000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    event = Appointment(start=start, end=start)
    assert APPOINTMENT_MAP.project(event).values["scheduledstart"] == "2026-03-29T01:30:15Z"
    assert parse_utc("2026-03-29T01:30:15Z") == dt.datetime(2026, 3, 29, 1, 30, 15, tzinfo=dt.UTC)
    assert parse_utc("2026-03-29T03:30:15+02:00") == dt.datetime(2026, 3, 29, 1, 30, 15, tzinfo=dt.UTC)


def test_a_null_crm_start_never_blanks_a_required_outlook_time() -> None:
    event = Appointment(start=samples.START, end=samples.END)
    assert APPOINTMENT_MAP.apply(event, {"scheduledstart": None}).start == samples.START


def test_appointment_parties_and_ical_uid() -> None:
    values = APPOINTMENT_MAP.project(samples.appointments()[0]).values
    assert values["organizer"] == (PartySpec(7, "organizer@example.com"),)
    assert values["requiredattendees"] == (PartySpec(5, "req@example.com"),)
    assert values["optionalattendees"] == (PartySpec(6, "opt@example.com"),)  # the room is not a party
    assert values["globalobjectid"] == "040000008200E00074C5B7101A82E008"


def test_recurring_series_choices() -> None:
    event = Appointment(start=samples.START, end=samples.END)
    assert APPOINTMENT_MAP.skip_reason(event.model_copy(update={"event_kind": EventKind.SERIES_MASTER}))
    for kind in (EventKind.SINGLE, EventKind.OCCURRENCE, EventKind.EXCEPTION):
        assert APPOINTMENT_MAP.skip_reason(event.model_copy(update={"event_kind": kind})) is None


def test_task_status_sets_state_reason_and_known_percentages() -> None:
    def columns(status: TaskStatus) -> tuple[object, object, object]:
        values = TASK_MAP.project(Task(status=status)).values
        return values["statecode"], values["statuscode"], values.get("percentcomplete", ABSENT)

    assert columns(TaskStatus.NOT_STARTED) == (0, 2, 0)
    assert columns(TaskStatus.IN_PROGRESS) == (0, 3, ABSENT)
    assert columns(TaskStatus.WAITING_ON_OTHERS) == (0, 4, ABSENT)
    assert columns(TaskStatus.DEFERRED) == (0, 7, ABSENT)
    assert columns(TaskStatus.COMPLETED) == (1, 5, 100)
    assert TASK_MAP.apply(Task(), {"statuscode": 6}).status is TaskStatus.COMPLETED  # Canceled


def test_email_is_one_way_and_fixed() -> None:
    assert set(EMAIL_MAP.directions({"subject": FieldDirection.TWO_WAY}).values()) == {FieldDirection.TO_CRM}
    assert EMAIL_MAP.blank is None
    with pytest.raises(ValueError, match="never created in Outlook"):
        EMAIL_MAP.item_from_crm({})


def test_a_crm_appointment_without_times_is_not_created_in_outlook() -> None:
    assert APPOINTMENT_MAP.crm_skip_reason({"subject": "x", "scheduledstart": "2026-01-01T10:00:00Z"}) == (
        "the CRM record has no scheduledend"
    )
    with pytest.raises(ValueError, match="no scheduledstart, scheduledend"):
        APPOINTMENT_MAP.item_from_crm({"subject": "x"})


def test_email_parties_and_direction() -> None:
    incoming, outgoing = samples.emails()
    values = EMAIL_MAP.project(outgoing).values
    assert values["from"] == (PartySpec(1, "sender@example.com"),)
    assert values["to"] == (PartySpec(2, "to@example.com"),)
    assert values["cc"] == (PartySpec(3, "cc@example.com"),)
    assert values["bcc"] == (PartySpec(4, "bcc@example.com"),)
    assert (values["directioncode"], values["statuscode"], values["description"]) == (True, 3, "Hello")
    incoming_values = EMAIL_MAP.project(incoming).values
    assert (incoming_values["directioncode"], incoming_values["statuscode"]) == (False, 4)
    assert "description" not in incoming_values  # body not read: the column is left alone
    assert incoming_values["bcc"] is None


def test_contact_email_slots_close_up_like_outlook() -> None:
    contact = Contact(
        email_addresses=(EmailAddress(address="a@x.io", name="A"), EmailAddress(address="b@x.io"))
    )
    assert CONTACT_MAP.apply(contact, {"emailaddress1": None}).email_addresses == (
        EmailAddress(address="b@x.io"),
    )
    renamed_case = CONTACT_MAP.apply(contact, {"emailaddress1": "A@X.IO"})
    assert renamed_case.email_addresses[0].name == "A"  # same address: the display name is kept


def test_clearing_every_address_part_removes_the_address() -> None:
    contact = Contact(home_address=PhysicalAddress(city="Ockham"))
    assert CONTACT_MAP.apply(contact, {"address2_city": None}).home_address is None


def test_contact_does_not_write_company_phone_with_a_company_name() -> None:
    assert "company" not in CONTACT_MAP.columns


def test_directions_overrides_apply_only_to_unfixed_leading_columns() -> None:
    directions = APPOINTMENT_MAP.directions(
        {
            "subject": FieldDirection.TO_OUTLOOK,
            "globalobjectid": FieldDirection.TWO_WAY,
            "statecode": FieldDirection.NONE,
        }
    )
    assert directions["subject"] is FieldDirection.TO_OUTLOOK
    assert directions["globalobjectid"] is FieldDirection.TO_CRM  # fixed
    assert "statecode" not in directions  # follows statuscode
    assert APPOINTMENT_MAP.units()["statuscode"] == ("statuscode", "statecode")


def test_every_two_way_column_can_flow_back() -> None:
    for field_map in (CONTACT_MAP, APPOINTMENT_MAP, TASK_MAP):
        for leader, direction in field_map.directions().items():
            if direction in (FieldDirection.TWO_WAY, FieldDirection.TO_OUTLOOK):
                assert leader in _flows_back(field_map)


def _subject(task: Task) -> str | None:
    return task.subject


def test_field_map_definitions_are_checked() -> None:
    with pytest.raises(ValueError, match="cannot flow to Outlook"):
        FieldMapping("subject", _subject)
    subject: FieldMapping[Task] = FieldMapping("subject", _subject, direction=FieldDirection.TO_CRM)
    with pytest.raises(ValueError, match="mapped twice"):
        FieldMap(ItemKind.TASK, "task", (subject, subject))
    a: FieldMapping[Task] = FieldMapping("a", _subject, direction=FieldDirection.TO_CRM, follows="b")
    b: FieldMapping[Task] = FieldMapping("b", _subject, direction=FieldDirection.TO_CRM, follows="c")
    with pytest.raises(ValueError, match="leading column"):
        FieldMap(ItemKind.TASK, "task", (a, b))


def test_a_map_naming_a_missing_attribute_fails_when_built() -> None:
    from shared.sync.fieldmaps.base import PRIORITY_CODES, choice_column, text_column

    with pytest.raises(ValueError, match="Email has no attribute 'importance'"):
        choice_column(Email, "prioritycode", "importance", PRIORITY_CODES)
    with pytest.raises(ValueError, match="Task has no attribute 'title'"):
        text_column(Task, "subject", "title")


def test_crm_values_are_canonical() -> None:
    assert canonical_crm_value("") is None
    assert canonical_crm_value([[2, "b@x.io"], [2, "a@x.io"]]) == (
        PartySpec(2, "a@x.io"),
        PartySpec(2, "b@x.io"),
    )
    assert canonical_crm_value([]) is None
    with pytest.raises(TypeError):
        canonical_crm_value(1.5)
    assert CONTACT_MAP.crm_values({"firstname": "", "creditlimit": 5})["firstname"] is None


def test_fingerprint_is_stable_and_order_independent() -> None:
    assert fingerprint({"a": 1, "b": "x"}) == fingerprint({"b": "x", "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": "1"})
    assert len(fingerprint({})) == 32


# --- ids ---------------------------------------------------------------------------------------


def test_message_ids_are_normalised() -> None:
    assert normalize_message_id(" <CAF=x+Y@Mail.Example.COM> ") == "CAF=x+Y@mail.example.com"
    assert normalize_message_id("no-at-sign") == "no-at-sign"


def test_one_record_id_per_message_across_mailboxes() -> None:
    message = Email(internet_message_id="<m1@Example.com>")
    other_copy = Email(internet_message_id="m1@example.com", subject="Re-delivered")
    first = crm_record_id(ItemKind.EMAIL, natural_key("mbx-a", "id-a", message))
    second = crm_record_id(ItemKind.EMAIL, natural_key("mbx-b", "id-b", other_copy))
    assert first == second
    assert first.version == 5


def test_one_record_id_per_meeting_across_mailboxes() -> None:
    event = Appointment(start=samples.START, end=samples.END, ical_uid="UID-7")
    assert natural_key("mbx-a", "a", event) == natural_key("mbx-b", "b", event) == "ical:UID-7"


def test_a_reused_message_id_or_ical_uid_from_another_sender_is_another_record() -> None:
    """The message id and iCalUId are chosen by whoever sends them: an outsider reusing a known
    one must not land on the victim's record, while every copy of the real one still shares it."""
    alice, mallory = EmailAddress(address="alice@contoso.example"), EmailAddress(address="x@evil.example")
    real = Email(internet_message_id="<m1@contoso.example>", sender=alice)
    copy = Email(
        internet_message_id="<m1@contoso.example>", sender=EmailAddress(address="Alice@Contoso.example")
    )
    forged = Email(internet_message_id="<m1@contoso.example>", sender=mallory)
    key = natural_key
    assert key("mbx-a", "a", real) == key("mbx-b", "b", copy) != key("mbx-c", "c", forged)
    meeting = Appointment(start=samples.START, end=samples.END, ical_uid="UID-7", organizer=alice)
    invite = Appointment(start=samples.START, end=samples.END, ical_uid="UID-7", organizer=mallory)
    assert key("mbx-a", "a", meeting) != key("mbx-c", "c", invite)


def test_personal_items_are_keyed_by_mailbox_and_outlook_id() -> None:
    contact = Contact(surname="Lee")
    ids = {
        crm_record_id(ItemKind.CONTACT, natural_key(mailbox, item, contact))
        for mailbox, item in [("m1", "i1"), ("m2", "i1"), ("m1", "i2"), ("m1/i", "2"), ("m1", "/i2")]
    }
    assert len(ids) == 5  # no two (mailbox, id) pairs collide, even with "/" in ids


def test_record_ids_differ_by_kind_and_are_stable() -> None:
    assert crm_record_id(ItemKind.TASK, "k") != crm_record_id(ItemKind.CONTACT, "k")
    assert crm_record_id(ItemKind.TASK, "k") == uuid.uuid5(
        uuid.UUID("6f0c6a52-3c1e-5b8e-9a57-1d2f63c0b7a4"), "task:k"
    )


def _reference_fingerprint(values: dict[str, object]) -> str:
    """The stored format, computed the plain way: canonical JSON, SHA-256, 32 hex digits."""
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


@pytest.mark.parametrize("fmap", [CONTACT_MAP, APPOINTMENT_MAP, TASK_MAP, EMAIL_MAP])
def test_fingerprints_of_empty_units_match_the_stored_format(fmap: FieldMap[object]) -> None:
    """Empty units' fingerprints are remembered per set of columns; link rows store them, so the
    remembered ones must be the computed ones, every time and for every unit."""
    for members in [*fmap.units().values(), tuple(fmap.columns)]:
        empty = dict.fromkeys(members)
        assert fingerprint(empty) == fingerprint(dict(empty)) == _reference_fingerprint(empty)
        for column in members:  # a unit with a value is computed as before
            for value in ("x", 0, 1, True, 1.5, ""):
                filled = {**empty, column: value}
                assert fingerprint(filled) == _reference_fingerprint(filled)
    assert fingerprint({"a": None, "b": None}) != fingerprint({"b": None, "c": None})
    assert fingerprint({"a": True}) != fingerprint({"a": 1})
