"""What Dynamics users set stays set: a status or owner set in Dynamics on a synced item or a tracked
email is never cleared or overwritten by crmsync unless the same field changed in Outlook and its
direction and the tie-break say so (the regarding: tests/tracking/test_dynamics_set.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.domain.model import Appointment, Email, EmailAddress, ItemKind, Task, TaskStatus
from shared.sync.merge import Side
from shared.sync.plan import Action, Conflict, CreateInCrm, SyncPolicy, UpdateCrm
from tests.sync.world import NOW, World


def _crm_writes(actions: list[Action]) -> list[dict[str, object]]:
    return [dict(a.values) for a in actions if isinstance(a, UpdateCrm | CreateInCrm)]


@pytest.mark.parametrize("tie_break", [Side.CRM, Side.OUTLOOK])
def test_a_task_completed_in_dynamics_stays_completed_when_outlook_changes_something_else(
    tie_break: Side,
) -> None:
    world = World(ItemKind.TASK, SyncPolicy(tie_break=tie_break))
    mailbox = world.mailbox()
    item_id = world.outlook_create(mailbox, Task(subject="Call back"))
    world.sync(mailbox)
    record_id = mailbox.links[item_id].crm_id
    world.crm_edit(record_id, statuscode=5, statecode=1)
    world.outlook_edit(mailbox, item_id, subject="Call back today")  # at the same time

    actions = world.sync(mailbox)

    assert _crm_writes(actions) == [{"subject": "Call back today"}]
    assert world.records[record_id].values["statuscode"] == 5
    item = mailbox.items[item_id].item
    assert isinstance(item, Task)
    assert item.status is TaskStatus.COMPLETED
    world.outlook_edit(mailbox, item_id, subject="Called")
    assert _crm_writes(world.sync(mailbox)) == [{"subject": "Called"}]


def test_the_same_status_changed_on_both_sides_goes_to_the_tie_break() -> None:
    world = World(ItemKind.TASK)  # tie-break crm (the default)
    mailbox = world.mailbox()
    item_id = world.outlook_create(mailbox, Task(subject="Call back"))
    world.sync(mailbox)
    record_id = mailbox.links[item_id].crm_id
    world.crm_edit(record_id, statuscode=5, statecode=1)
    world.outlook_edit(mailbox, item_id, status=TaskStatus.IN_PROGRESS)

    actions = world.sync(mailbox)

    assert [(c.column, c.winner) for c in actions if isinstance(c, Conflict)] == [("statuscode", Side.CRM)]
    assert _crm_writes(actions) == []
    assert world.records[record_id].values["statuscode"] == 5


def test_an_appointment_status_set_in_dynamics_is_not_overwritten_by_outlook_edits() -> None:
    world = World(ItemKind.APPOINTMENT)
    mailbox = world.mailbox()
    start = NOW + dt.timedelta(days=1)
    event = Appointment(subject="Review", start=start, end=start + dt.timedelta(hours=1), ical_uid="UID-9")
    item_id = world.outlook_create(mailbox, event)
    world.sync(mailbox)
    record_id = mailbox.links[item_id].crm_id
    world.crm_edit(record_id, statuscode=3, statecode=1)  # Completed: Outlook has no show-as for it
    world.outlook_edit(mailbox, item_id, location="Room 7")

    first = world.sync(mailbox)
    world.outlook_edit(mailbox, item_id, subject="Review (final)")
    second = world.sync(mailbox)

    assert _crm_writes(first) == [{"location": "Room 7"}]
    assert _crm_writes(second) == [{"subject": "Review (final)"}]
    assert (world.records[record_id].values["statuscode"], world.records[record_id].values["statecode"]) == (
        3,
        1,
    )


def test_an_email_status_set_in_dynamics_is_kept_when_the_message_changes() -> None:
    world = World(ItemKind.EMAIL)
    mailbox = world.mailbox()
    mail = Email(
        subject="Proposal",
        sender=EmailAddress(address="seller@contoso.com"),
        internet_message_id="<proposal-9@contoso.com>",
        body="Hi",
    )
    item_id = world.outlook_create(mailbox, mail)
    world.sync(mailbox)
    record_id = mailbox.links[item_id].crm_id
    world.crm_edit(record_id, statuscode=5, statecode=2)  # canceled by a Dynamics user
    world.outlook_edit(mailbox, item_id, body="Hi again")

    actions = world.sync(mailbox)

    assert _crm_writes(actions) == [{"description": "Hi again"}]
    assert world.records[record_id].values["statuscode"] == 5


def test_an_owner_changed_in_dynamics_is_never_written_back() -> None:
    world = World(ItemKind.TASK)
    mailbox = world.mailbox()
    item_id = world.outlook_create(mailbox, Task(subject="Call back"))
    world.sync(mailbox)
    record_id = mailbox.links[item_id].crm_id
    world.records[record_id].owner = "someone-else"  # assigned in Dynamics
    world.crm_edit(record_id)
    world.outlook_edit(mailbox, item_id, subject="Call back Monday")

    actions = world.sync(mailbox)

    writes = _crm_writes(actions)
    assert writes == [{"subject": "Call back Monday"}]
    assert not any("owner" in column for values in writes for column in values)
    assert world.records[record_id].owner == "someone-else"
    assert not mailbox.links[item_id].owned_by_user  # deletes now follow the new owner


def test_a_second_mailbox_linking_a_tracked_email_keeps_what_dynamics_holds() -> None:
    # One CRM email per message: the recipient's copy links to the record the sender's mailbox made.
    # Nothing says a one-way column changed in Outlook there, so a Dynamics user's status stays.
    world = World(ItemKind.EMAIL)
    first, second = world.mailbox("mbx-a", "user-a"), world.mailbox("mbx-b", "user-b")
    mail = Email(
        subject="Proposal",
        sender=EmailAddress(address="seller@contoso.com"),
        internet_message_id="<proposal-10@contoso.com>",
        body="Hi",
    )
    world.outlook_create(first, mail)
    world.sync(first)
    (record_id,) = world.records
    world.crm_edit(record_id, statuscode=5, statecode=2, subject="Proposal (filed)")
    world.outlook_create(second, mail)

    actions = world.sync(second)

    assert _crm_writes(actions) == []
    assert world.records[record_id].values["statuscode"] == 5
    assert world.records[record_id].values["subject"] == "Proposal (filed)"
