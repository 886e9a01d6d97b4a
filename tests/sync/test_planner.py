"""Scenario tests for the planner, one per case, run through the in-memory world's applier."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from shared.domain.model import (
    Appointment,
    Attendee,
    AttendeeType,
    Contact,
    Email,
    EmailAddress,
    EventKind,
    FieldDirection,
    ItemKind,
    Participation,
    ShowAs,
    Task,
    TaskStatus,
)
from shared.sync.brake import MassDeleteRefusedError, check_mass_delete, count_deletes
from shared.sync.fieldmaps import crm_record_id, field_map, natural_key
from shared.sync.fieldmaps.base import PartySpec
from shared.sync.merge import Side
from shared.sync.plan import (
    Action,
    Conflict,
    CreateInCrm,
    CrmState,
    DeleteInCrm,
    DeleteInOutlook,
    DeletePolicy,
    GoneReason,
    OutlookState,
    PlanFacts,
    Skip,
    SyncPolicy,
    UnlinkOnly,
    UpdateCrm,
    UpdateOutlook,
    WriteLink,
)
from shared.sync.planner import plan_item
from tests.sync.world import NOW, USER, Mailbox, World


def _kinds(actions: list[Action]) -> list[str]:
    return [type(action).__name__ for action in actions]


def _synced_contact(world: World, **fields: object) -> tuple[Mailbox, str, CrmState]:
    """A contact created in Outlook and synced once; returns the mailbox, its id and CRM state."""
    mailbox = world.mailbox()
    item_id = world.outlook_create(mailbox, Contact.model_validate({"surname": "Lee", **fields}))
    world.sync(mailbox)
    link = mailbox.links[item_id]
    return mailbox, item_id, world.crm_state(mailbox, link.crm_id)


# --- creates and reruns ------------------------------------------------------------------------


def test_new_outlook_contact_is_created_in_crm_under_its_deterministic_id() -> None:
    world = World(ItemKind.CONTACT)
    mailbox = world.mailbox()
    item_id = world.outlook_create(mailbox, Contact(given_name="Ann", surname="Lee"))

    actions = world.sync(mailbox)

    # no stamp on the Outlook item: the deterministic id finds the record again after a lost link
    assert _kinds(actions) == ["CreateInCrm", "WriteLink"]
    expected_id = crm_record_id(ItemKind.CONTACT, natural_key("mbx-1", item_id, mailbox.items[item_id].item))
    assert set(world.records) == {expected_id}
    assert world.records[expected_id].values["firstname"] == "Ann"
    assert mailbox.links[item_id].crm_etag == world.records[expected_id].etag


def test_rerun_after_success_plans_nothing() -> None:
    world = World(ItemKind.CONTACT)
    mailbox, _, _ = _synced_contact(world, given_name="Ann")
    assert world.sync(mailbox) == []


def test_crash_before_the_link_write_reruns_without_a_duplicate() -> None:
    world = World(ItemKind.CONTACT)
    mailbox, item_id, _ = _synced_contact(world, given_name="Ann")
    mailbox.links.clear()  # the link write was lost

    actions = world.sync(mailbox)

    assert _kinds(actions) == ["WriteLink"]  # the existing record is adopted, not created again
    assert len(world.records) == 1
    assert item_id in mailbox.links


def test_replayed_create_plans_the_same_record_id() -> None:
    world = World(ItemKind.CONTACT)
    mailbox = world.mailbox()
    item_id = world.outlook_create(mailbox, Contact(surname="Lee"))
    state = world.outlook_state(mailbox, item_id)
    plans = [
        plan_item(
            ItemKind.CONTACT,
            mailbox_id="mbx-1",
            outlook=state,
            link=None,
            crm=None,
            policy=SyncPolicy(),
            now=NOW,
        )
        for _ in range(2)
    ]
    assert plans[0] == plans[1]
    assert isinstance(plans[0][0], CreateInCrm)


# --- changes on one side ---------------------------------------------------------------------


def test_changed_in_outlook_crm_unchanged_updates_only_the_changed_column() -> None:
    world = World(ItemKind.CONTACT)
    mailbox, item_id, crm = _synced_contact(world, given_name="Ann", job_title="Analyst")
    world.outlook_edit(mailbox, item_id, job_title="Lead analyst")

    actions = world.sync(mailbox)

    assert _kinds(actions) == ["UpdateCrm", "WriteLink"]
    update = actions[0]
    assert isinstance(update, UpdateCrm)
    assert update.values == {"jobtitle": "Lead analyst"}
    assert update.if_match == crm.etag  # a concurrent CRM edit turns into a 412 and a re-plan
    assert world.sync(mailbox) == []


def test_a_linked_item_whose_delta_does_not_show_the_stamp_is_not_stamped_again() -> None:
    # calendarView delta cannot $expand extended properties, so an event never shows its stamp;
    # stamping it on every change would cost a Graph write and echo a notification each time.
    world = World(ItemKind.CONTACT)
    mailbox, item_id, _ = _synced_contact(world, given_name="Ann")
    world.outlook_edit(mailbox, item_id, job_title="Lead analyst")
    mailbox.items[item_id].crm_id = None

    assert _kinds(world.sync(mailbox)) == ["UpdateCrm", "WriteLink"]


def test_changed_in_crm_outlook_unchanged_updates_outlook() -> None:
    world = World(ItemKind.CONTACT)
    mailbox, item_id, crm = _synced_contact(world, given_name="Ann")
    world.crm_edit(crm.record_id, mobilephone="+47 555 0100")

    actions = world.sync(mailbox)

    assert _kinds(actions) == ["UpdateOutlook", "WriteLink"]
    update = actions[0]
    assert isinstance(update, UpdateOutlook)
    assert update.columns == ("mobilephone",)
    assert mailbox.items[item_id].item.model_dump()["mobile_phone"] == "+47 555 0100"
    assert world.sync(mailbox) == []


def test_outlook_version_bump_without_content_change_is_not_a_change() -> None:
    world = World(ItemKind.CONTACT)
    mailbox, item_id, _ = _synced_contact(world, given_name="Ann")
    world.outlook_edit(mailbox, item_id)  # new change key, same content (e.g. our own write echoed)

    # nothing to write: the content hash, not the change key, decides (no link rewrite per echo)
    assert world.sync(mailbox) == []


def test_crm_etag_bump_without_mapped_change_is_not_a_change() -> None:
    world = World(ItemKind.CONTACT)
    mailbox, _, crm = _synced_contact(world, given_name="Ann")
    world.crm_edit(crm.record_id, creditlimit=1000)  # unmapped column: not content for the sync

    assert world.sync(mailbox) == []
    assert world.sync(mailbox) == []


# --- changes on both sides -------------------------------------------------------------------


def test_both_changed_different_fields_both_flow_without_conflict() -> None:
    world = World(ItemKind.CONTACT)
    mailbox, item_id, crm = _synced_contact(world, given_name="Ann")
    world.outlook_edit(mailbox, item_id, job_title="CTO")
    world.crm_edit(crm.record_id, department="Research")

    actions = world.sync(mailbox)

    assert _kinds(actions) == ["UpdateCrm", "UpdateOutlook", "WriteLink"]
    assert world.records[crm.record_id].values["jobtitle"] == "CTO"
    assert mailbox.items[item_id].item.model_dump()["department"] == "Research"


@pytest.mark.parametrize(("tie_break", "expected"), [(Side.CRM, "from CRM"), (Side.OUTLOOK, "from Outlook")])
def test_both_changed_same_field_goes_to_the_tie_break(tie_break: Side, expected: str) -> None:
    world = World(ItemKind.CONTACT, SyncPolicy(tie_break=tie_break))
    mailbox, item_id, crm = _synced_contact(world, given_name="Ann")
    world.outlook_edit(mailbox, item_id, job_title="from Outlook")
    world.crm_edit(crm.record_id, jobtitle="from CRM")

    actions = world.sync(mailbox)

    conflicts = [action for action in actions if isinstance(action, Conflict)]
    assert [(c.column, c.winner, c.rule) for c in conflicts] == [("jobtitle", tie_break, "tie_break")]
    assert world.records[crm.record_id].values["jobtitle"] == expected
    assert mailbox.items[item_id].item.model_dump()["job_title"] == expected
    assert world.sync(mailbox) == []


def test_field_direction_override_stops_a_flow() -> None:
    policy = SyncPolicy(directions={"jobtitle": FieldDirection.TO_CRM, "department": FieldDirection.NONE})
    world = World(ItemKind.CONTACT, policy)
    mailbox, item_id, crm = _synced_contact(world, job_title="Analyst", department="Sales")
    world.crm_edit(crm.record_id, jobtitle="CRM title", department="CRM dept")

    actions = world.sync(mailbox)

    assert _kinds(actions) == ["WriteLink"]  # neither may flow to Outlook
    assert mailbox.items[item_id].item.model_dump()["job_title"] == "Analyst"
    world.outlook_edit(mailbox, item_id, job_title="Outlook title", department="Outlook dept")
    update = world.sync(mailbox)[0]
    assert isinstance(update, UpdateCrm)
    assert update.values == {"jobtitle": "Outlook title"}  # to_crm flows, none does not


def test_fixed_fields_ignore_mailbox_overrides() -> None:
    email_map = field_map(ItemKind.EMAIL)
    assert email_map.directions({"subject": FieldDirection.TWO_WAY})["subject"] is FieldDirection.TO_CRM


# --- deletes ---------------------------------------------------------------------------------


def test_outlook_delete_of_a_contact_keeps_the_crm_record() -> None:
    world = World(ItemKind.CONTACT)
    mailbox, item_id, crm = _synced_contact(world)
    del mailbox.items[item_id]

    actions = world.run(
        mailbox, outlook=world.outlook_state(mailbox, item_id), link=mailbox.links[item_id], crm=crm
    )

    assert _kinds(actions) == ["UnlinkOnly"]
    assert crm.record_id in world.records


def _synced_task(world: World, *, owner: str = USER, **fields: object) -> tuple[Mailbox, str, CrmState]:
    mailbox = world.mailbox()
    item_id = world.outlook_create(mailbox, Task.model_validate({"subject": "Call", **fields}))
    world.sync(mailbox)
    link = mailbox.links[item_id]
    world.records[link.crm_id].owner = owner
    return mailbox, item_id, world.crm_state(mailbox, link.crm_id)


@pytest.mark.parametrize(
    ("owner", "expected"), [(USER, ["DeleteInCrm", "DropLink"]), ("someone-else", ["UnlinkOnly"])]
)
def test_outlook_delete_of_a_task_deletes_the_crm_task_only_if_the_user_owns_it(
    owner: str, expected: list[str]
) -> None:
    world = World(ItemKind.TASK)
    mailbox, item_id, crm = _synced_task(world, owner=owner)
    del mailbox.items[item_id]

    actions = world.sync(mailbox, pull_crm=False)

    assert _kinds(actions) == expected
    assert (crm.record_id in world.records) is (owner != USER)
    assert mailbox.links == {}


def test_outlook_delete_after_a_crm_change_keeps_the_crm_record() -> None:
    world = World(ItemKind.TASK)
    mailbox, item_id, crm = _synced_task(world)
    world.crm_edit(crm.record_id, description="new notes in the CRM")
    del mailbox.items[item_id]

    actions = world.sync(mailbox)

    assert isinstance(actions[0], UnlinkOnly)
    assert actions[0].kept is Side.CRM
    assert crm.record_id in world.records


def test_delete_policy_unlink_never_deletes() -> None:
    world = World(ItemKind.TASK, SyncPolicy(delete_policy=DeletePolicy.UNLINK))
    mailbox, item_id, crm = _synced_task(world)
    del mailbox.items[item_id]
    assert _kinds(world.sync(mailbox, pull_crm=False)) == ["UnlinkOnly"]
    assert crm.record_id in world.records


def _synced_meeting(world: World, start: dt.datetime) -> tuple[Mailbox, str, CrmState]:
    mailbox = world.mailbox()
    event = Appointment(subject="Review", start=start, end=start + dt.timedelta(hours=1), ical_uid="UID-1")
    item_id = world.outlook_create(mailbox, event)
    world.sync(mailbox)
    return mailbox, item_id, world.crm_state(mailbox, mailbox.links[item_id].crm_id)


@pytest.mark.parametrize(
    ("start", "expected"),
    [(NOW + dt.timedelta(days=1), ["DeleteInCrm", "DropLink"]), (NOW - dt.timedelta(days=1), ["UnlinkOnly"])],
)
def test_untracking_an_appointment_deletes_the_crm_copy_only_if_not_over(
    start: dt.datetime, expected: list[str]
) -> None:
    world = World(ItemKind.APPOINTMENT)
    mailbox, item_id, _ = _synced_meeting(world, start)
    mailbox.items[item_id].tracked = False

    assert _kinds(world.sync(mailbox, pull_crm=False)) == expected


@pytest.mark.parametrize(
    ("owner", "expected"), [("someone-else", ["DeleteInOutlook", "DropLink"]), (USER, ["UnlinkOnly"])]
)
def test_crm_delete_of_a_contact_removes_the_outlook_copy_unless_the_user_owns_it(
    owner: str, expected: list[str]
) -> None:
    world = World(ItemKind.CONTACT)
    mailbox, item_id, crm = _synced_contact(world)
    world.records[crm.record_id].owner = owner
    world.sync(mailbox)  # the link learns the owner
    del world.records[crm.record_id]

    actions = world.sync(mailbox)

    assert _kinds(actions) == expected
    assert (item_id in mailbox.items) is (owner == USER)
    assert world.records == {}  # an Outlook item kept after a CRM delete is untracked, not re-created


@pytest.mark.parametrize(
    ("status", "expected"),
    [(TaskStatus.IN_PROGRESS, ["DeleteInOutlook", "DropLink"]), (TaskStatus.COMPLETED, ["UnlinkOnly"])],
)
def test_crm_delete_of_a_task_removes_it_from_outlook_while_current(
    status: TaskStatus, expected: list[str]
) -> None:
    world = World(ItemKind.TASK)
    mailbox, _, crm = _synced_task(world, status=status)
    del world.records[crm.record_id]
    assert _kinds(world.sync(mailbox)) == expected


def test_crm_delete_of_a_changed_outlook_item_recreates_it() -> None:
    world = World(ItemKind.TASK)
    mailbox, item_id, crm = _synced_task(world)
    del world.records[crm.record_id]
    world.outlook_edit(mailbox, item_id, subject="Call twice")

    actions = world.sync(mailbox)

    assert _kinds(actions) == ["CreateInCrm", "WriteLink"]
    assert world.records[crm.record_id].values["subject"] == "Call twice"


@pytest.mark.parametrize("policy", [DeletePolicy.DYNAMICS, DeletePolicy.UNLINK])
def test_a_crm_delete_stands_when_the_outlook_item_is_kept(policy: DeletePolicy) -> None:
    """A tombstone: neither a later read nor an edit in Outlook re-creates the record (Dynamics
    untracks the kept item); deleting the item in Outlook too forgets the tombstone."""
    world = World(ItemKind.CONTACT, SyncPolicy(delete_policy=policy))
    mailbox, item_id, crm = _synced_contact(world)  # the user owns it: Dynamics keeps the contact
    del world.records[crm.record_id]

    assert _kinds(world.sync(mailbox)) == ["UnlinkOnly"]
    assert mailbox.links[item_id].crm_deleted
    assert _kinds(world.sync(mailbox)) == ["Skip"]
    world.outlook_edit(mailbox, item_id, surname="Leigh")
    assert _kinds(world.sync(mailbox)) == ["Skip"]
    assert world.records == {}
    del mailbox.items[item_id]
    assert _kinds(world.sync(mailbox)) == ["DropLink"]
    assert mailbox.links == {}


def test_gone_on_both_sides_drops_the_link() -> None:
    world = World(ItemKind.TASK)
    mailbox, item_id, crm = _synced_task(world)
    del mailbox.items[item_id]
    del world.records[crm.record_id]
    assert _kinds(world.sync(mailbox)) == ["DropLink"]
    assert mailbox.links == {}


# --- CRM -> Outlook --------------------------------------------------------------------------


def test_new_crm_task_is_created_in_outlook_and_linked_to_the_new_item() -> None:
    world = World(ItemKind.TASK)
    mailbox = world.mailbox()
    record_id = world.crm_create({"subject": "From CRM", "statuscode": 3, "statecode": 0, "prioritycode": 2})

    actions = world.sync(mailbox)

    assert _kinds(actions) == ["CreateInOutlook", "WriteLink"]
    (item_id,) = mailbox.items
    task = mailbox.items[item_id].item
    assert isinstance(task, Task)
    assert (task.subject, task.status, task.importance.value) == ("From CRM", TaskStatus.IN_PROGRESS, "high")
    assert mailbox.links[item_id].crm_id == record_id
    assert world.sync(mailbox) == []


def test_a_crm_email_is_never_created_in_outlook() -> None:
    world = World(ItemKind.EMAIL)
    record_id = world.crm_create({"subject": "hello"})
    actions = plan_item(
        ItemKind.EMAIL,
        mailbox_id="mbx-1",
        outlook=None,
        link=None,
        crm=world.crm_state(world.mailbox(), record_id),
        policy=SyncPolicy(),
        now=NOW,
    )
    assert _kinds(actions) == ["Skip"]


# --- shared items: one CRM record per message / meeting ---------------------------------------


def _message(**changes: object) -> Email:
    base = Email(
        subject="Proposal",
        sender=EmailAddress(address="seller@contoso.com"),
        to=(EmailAddress(address="buyer@fabrikam.com"), EmailAddress(address="boss@fabrikam.com")),
        internet_message_id="<proposal-1@Contoso.COM>",
        is_outgoing=False,
    )
    return base.model_copy(update=changes)


def test_one_crm_email_per_internet_message_id_across_mailboxes() -> None:
    world = World(ItemKind.EMAIL)
    buyer, boss = world.mailbox("mbx-buyer", "user-buyer"), world.mailbox("mbx-boss", "user-boss")
    world.outlook_create(buyer, _message(body="Hi"))
    world.outlook_create(boss, _message(body="Hi"))

    first, second = world.sync(buyer), world.sync(boss)

    assert _kinds(first) == ["CreateInCrm", "WriteLink"]
    assert _kinds(second) == ["WriteLink"]  # the second copy links to the same record
    assert len(world.records) == 1
    (record,) = world.records.values()
    assert record.values["directioncode"] is False
    assert (record.values["statecode"], record.values["statuscode"]) == (1, 4)


def test_a_second_copy_in_the_same_mailbox_is_tracked_once() -> None:
    world = World(ItemKind.EMAIL)
    mailbox = world.mailbox()
    world.outlook_create(mailbox, _message(is_outgoing=True))  # Sent Items
    world.outlook_create(mailbox, _message())  # Inbox: sent to oneself

    actions = world.sync(mailbox)

    assert _kinds(actions) == ["CreateInCrm", "WriteLink", "Skip"]
    assert len(world.records) == 1
    skip = Skip(reason="another Outlook item of this mailbox is linked to the same CRM record")
    assert world.sync(mailbox) == [skip]


def test_email_body_is_written_only_once_read() -> None:
    world = World(ItemKind.EMAIL)
    mailbox = world.mailbox()
    item_id = world.outlook_create(mailbox, _message())  # tracking decision made without the body

    create = world.sync(mailbox)[0]
    assert isinstance(create, CreateInCrm)
    assert "description" not in create.values

    world.outlook_edit(mailbox, item_id, body="<p>Full text</p>", body_is_html=True)
    update = world.sync(mailbox)[0]
    assert isinstance(update, UpdateCrm)
    assert update.values == {"description": "<p>Full text</p>"}


def test_drafts_are_not_synchronised() -> None:
    world = World(ItemKind.EMAIL)
    mailbox = world.mailbox()
    world.outlook_create(mailbox, _message(is_draft=True))
    assert [a.reason for a in world.sync(mailbox) if isinstance(a, Skip)] == [
        "draft: only sent and received mail is tracked"
    ]
    assert world.records == {}


def test_one_crm_appointment_per_meeting_across_attendee_mailboxes() -> None:
    world = World(ItemKind.APPOINTMENT)
    start = NOW + dt.timedelta(days=2)
    meeting = Appointment(
        subject="Kick-off",
        start=start,
        end=start + dt.timedelta(hours=1),
        ical_uid="040000008200E00074C5B7101A82E00800000000",
        organizer=EmailAddress(address="org@contoso.com"),
        attendees=(Attendee(email=EmailAddress(address="a@contoso.com")),),
    )
    first, second = world.mailbox("mbx-a", "user-a"), world.mailbox("mbx-b", "user-b")
    world.outlook_create(first, meeting)
    world.outlook_create(second, meeting)

    create = world.sync(first)[0]
    world.sync(second)

    assert len(world.records) == 1
    assert isinstance(create, CreateInCrm)
    # appointment.statecode is not valid for create (contract): the status pair follows as an update.
    assert create.then_update == {"statuscode": 5, "statecode": 3}
    assert "statuscode" not in create.values
    assert create.values["globalobjectid"] == meeting.ical_uid


def test_party_lists_the_crm_adapter_does_not_read_back_are_not_changes() -> None:
    world = World(
        ItemKind.APPOINTMENT, unread=frozenset({"organizer", "requiredattendees", "optionalattendees"})
    )
    mailbox = world.mailbox()
    start = NOW + dt.timedelta(days=1)
    attendee = Attendee(email=EmailAddress(address="a@contoso.com"))
    item_id = world.outlook_create(
        mailbox, Appointment(subject="Plan", start=start, end=start, ical_uid="P", attendees=(attendee,))
    )
    world.sync(mailbox)
    record_id = mailbox.links[item_id].crm_id
    world.crm_edit(record_id, location="Room 2")

    assert _kinds(world.sync(mailbox)) == ["UpdateOutlook", "WriteLink"]  # parties not seen as changed

    second = Attendee(email=EmailAddress(address="b@contoso.com"))
    world.outlook_edit(mailbox, item_id, attendees=(attendee, second))
    update = world.sync(mailbox)[0]
    assert isinstance(update, UpdateCrm)
    assert set(update.values) == {"requiredattendees"}
    assert world.sync(mailbox) == []


def test_recurring_instances_are_their_own_appointments_and_the_master_is_skipped() -> None:
    world = World(ItemKind.APPOINTMENT)
    mailbox = world.mailbox()
    start = NOW + dt.timedelta(days=1)
    series = {"subject": "Weekly", "start": start, "end": start + dt.timedelta(minutes=30)}
    world.outlook_create(
        mailbox,
        Appointment.model_validate({**series, "event_kind": EventKind.SERIES_MASTER, "ical_uid": "M"}),
    )
    world.outlook_create(
        mailbox, Appointment.model_validate({**series, "event_kind": EventKind.OCCURRENCE, "ical_uid": "O"})
    )
    world.outlook_create(
        mailbox, Appointment.model_validate({**series, "event_kind": EventKind.EXCEPTION, "ical_uid": "X"})
    )

    actions = world.sync(mailbox)

    assert sum(isinstance(a, Skip) for a in actions) == 1
    assert {r.values["globalobjectid"] for r in world.records.values()} == {"O", "X"}


# --- limits and lossy mappings ---------------------------------------------------------------


def test_over_long_subject_is_fitted_reported_and_does_not_ping_pong() -> None:
    world = World(ItemKind.APPOINTMENT)
    mailbox = world.mailbox()
    start = NOW + dt.timedelta(days=1)
    world.outlook_create(mailbox, Appointment(subject="S" * 230, start=start, end=start, ical_uid="LONG"))

    create = world.sync(mailbox)[0]

    assert isinstance(create, CreateInCrm)
    assert len(str(create.values["subject"])) == 200
    assert [(f.column, f.original_length, f.max_length) for f in create.fitted] == [("subject", 230, 200)]
    assert world.sync(mailbox) == []  # Outlook keeps 230 characters, the CRM 200: not a change


def test_task_status_state_and_percentage_settle_as_one_unit() -> None:
    world = World(ItemKind.TASK, SyncPolicy(tie_break=Side.CRM))
    mailbox, item_id, crm = _synced_task(world)
    world.outlook_edit(mailbox, item_id, status=TaskStatus.COMPLETED)  # Outlook: state 1, reason 5
    world.crm_edit(crm.record_id, statuscode=3)  # CRM: reason 3, state still 0

    world.sync(mailbox)

    record = world.records[crm.record_id].values
    assert (record["statecode"], record["statuscode"]) == (0, 3)  # never state 1 with reason 3
    assert mailbox.items[item_id].item.model_dump()["status"] == TaskStatus.IN_PROGRESS


def test_a_cancelled_crm_task_shows_completed_in_outlook_without_ping_pong() -> None:
    world = World(ItemKind.TASK)
    mailbox, item_id, crm = _synced_task(world)
    world.crm_edit(crm.record_id, statecode=2, statuscode=6)

    world.sync(mailbox)

    task = mailbox.items[item_id].item
    assert isinstance(task, Task)
    assert task.status is TaskStatus.COMPLETED
    assert world.records[crm.record_id].values["statuscode"] == 6  # not overwritten with Completed
    assert world.sync(mailbox) == []


# --- contract of the planner itself -----------------------------------------------------------


def test_a_linked_item_needs_both_states() -> None:
    world = World(ItemKind.TASK)
    mailbox, item_id, _ = _synced_task(world)
    with pytest.raises(ValueError, match="both sides"):
        plan_item(
            ItemKind.TASK,
            mailbox_id="mbx-1",
            outlook=world.outlook_state(mailbox, item_id),
            link=mailbox.links[item_id],
            crm=None,
            policy=SyncPolicy(),
            now=NOW,
        )


def test_write_link_takes_versions_from_the_writes() -> None:
    world = World(ItemKind.CONTACT)
    mailbox, item_id, crm = _synced_contact(world)
    world.crm_edit(crm.record_id, jobtitle="CEO")
    world.outlook_edit(mailbox, item_id, department="Board")
    write_link = world.sync(mailbox)[-1]
    assert isinstance(write_link, WriteLink)
    assert (write_link.outlook_from_write, write_link.crm_from_write) == (True, True)
    link = mailbox.links[item_id]
    assert (link.outlook_change_key, link.crm_etag) == (
        mailbox.items[item_id].change_key,
        world.records[crm.record_id].etag,
    )


# --- the mass-delete brake --------------------------------------------------------------------


def test_mass_delete_brake_refuses_deleting_most_linked_items() -> None:
    deletes: list[Action] = [
        DeleteInCrm(table="task", record_id=crm_record_id(ItemKind.TASK, str(n)), if_match=None, reason="x")
        for n in range(6)
    ]
    deletes.append(DeleteInOutlook(item_id="a", reason="x"))
    deletes.append(
        UnlinkOnly(outlook_id="b", crm_id=crm_record_id(ItemKind.TASK, "b"), kept=Side.CRM, reason="x")
    )
    assert count_deletes(deletes) == 7
    with pytest.raises(MassDeleteRefusedError) as refused:
        check_mass_delete(10, count_deletes(deletes), 0.5)
    assert (refused.value.linked_count, refused.value.deletes) == (10, 7)
    check_mass_delete(20, 7, 0.5)  # 35 %: allowed
    check_mass_delete(4, 4, 0.5)  # below the minimum: a small mailbox may empty a folder


def test_outlook_state_from_a_delta_entry() -> None:
    from shared.domain.model import OutlookItem
    from shared.sync.plan import OutlookState

    removed = OutlookItem(mailbox_id="m", item_id="i", kind=ItemKind.TASK, removed=True)
    present = OutlookItem(
        mailbox_id="m", item_id="i", kind=ItemKind.TASK, change_key="c", item=Task(subject="t")
    )
    assert OutlookState.from_outlook_item(removed).gone is GoneReason.DELETED
    assert OutlookState.from_outlook_item(present).gone is None
    assert OutlookState.from_outlook_item(present, tracked=False).gone is GoneReason.UNTRACKED
    with pytest.raises(ValueError, match="content"):
        OutlookState("i")


def test_world_applier_refuses_stale_if_match() -> None:
    """The in-memory CRM enforces If-Match like Dataverse, so a plan made on stale state fails."""
    from tests.sync.world import PreconditionFailedError

    world = World(ItemKind.CONTACT)
    mailbox, item_id, crm = _synced_contact(world)
    world.outlook_edit(mailbox, item_id, job_title="A")
    stale = world.crm_state(mailbox, crm.record_id)
    world.crm_edit(crm.record_id, department="changed meanwhile")
    actions = plan_item(
        ItemKind.CONTACT,
        mailbox_id="mbx-1",
        outlook=world.outlook_state(mailbox, item_id),
        link=mailbox.links[item_id],
        crm=stale,
        policy=SyncPolicy(),
        now=NOW,
    )
    with pytest.raises(PreconditionFailedError):
        world.apply(mailbox, actions)


# --- meetings made in Dynamics ------------------------------------------------------------------


def test_an_attendee_copy_of_the_organizer_s_record_is_followed_never_written_either_way() -> None:
    """An invitee's copy linked to a record that is not its own (a meeting made in Dynamics): the
    organizer owns the meeting, so neither the copy's "tentative" nor a CRM edit is written across."""
    fmap = field_map(ItemKind.APPOINTMENT)
    start = NOW + dt.timedelta(days=2)
    invitation = Appointment(
        subject="Kick-off",
        start=start,
        end=start + dt.timedelta(hours=1),
        ical_uid="040000008200E00074C5B7101A82E00800000001",
        organizer=EmailAddress(address="org@contoso.com"),
        show_as=ShowAs.TENTATIVE,
        is_organizer=False,
    )
    record = uuid.UUID("6f1c2a3b-0000-4000-8000-000000000001")
    values = fmap.project(invitation.model_copy(update={"show_as": ShowAs.BUSY, "body": "Agenda"})).values
    crm = CrmState(record, dict(values), etag='W/"1"')
    outlook = OutlookState("event-1", "ck-1", invitation)
    policy = SyncPolicy(tie_break=Side.OUTLOOK)
    facts = PlanFacts(attendee_copy=True)

    first = plan_item(
        ItemKind.APPOINTMENT,
        mailbox_id="mbx-b",
        outlook=outlook,
        link=None,
        crm=crm,
        policy=policy,
        now=NOW,
        facts=facts,
    )
    assert _kinds(first) == ["WriteLink"]
    (write,) = first
    assert isinstance(write, WriteLink)
    assert write.link.crm_id == record

    edited = CrmState(record, {**values, "subject": "Kick-off (moved)"}, etag='W/"2"')
    again = plan_item(
        ItemKind.APPOINTMENT,
        mailbox_id="mbx-b",
        outlook=outlook,
        link=write.link,
        crm=edited,
        policy=policy,
        now=NOW,
        facts=facts,
    )
    assert _kinds(again) == ["WriteLink"]  # followed; Exchange, not crmsync, updates the copy
    unchanged = plan_item(
        ItemKind.APPOINTMENT,
        mailbox_id="mbx-b",
        outlook=outlook,
        link=write.link,
        crm=crm,
        policy=policy,
        now=NOW,
        facts=facts,
    )
    assert unchanged == []


def test_attendees_changed_in_dynamics_reach_the_organizer_s_event() -> None:
    world = World(ItemKind.APPOINTMENT)
    mailbox = world.mailbox()
    start = NOW + dt.timedelta(days=1)
    ann = Attendee(email=EmailAddress(address="ann@contoso.com"))
    item_id = world.outlook_create(
        mailbox, Appointment(subject="Plan", start=start, end=start, ical_uid="Q", attendees=(ann,))
    )
    world.sync(mailbox)
    record_id = mailbox.links[item_id].crm_id
    world.crm_edit(
        record_id,
        optionalattendees=(PartySpec(Participation.OPTIONAL, "guest@fabrikam.example"),),
    )

    update = world.sync(mailbox)[0]
    assert isinstance(update, UpdateOutlook)
    assert isinstance(update.item, Appointment)
    assert {(a.email.address, a.type) for a in update.item.attendees} == {
        ("ann@contoso.com", AttendeeType.REQUIRED),
        ("guest@fabrikam.example", AttendeeType.OPTIONAL),
    }
