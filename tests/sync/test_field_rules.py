"""Field directions (documented default < organization < mailbox; fixed fields never change) and
column security in the planner (an unreadable secured column never blanks Outlook; an unwritable
one is not written, the rest is, and the skip is audited)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid

import pytest

from shared.crm.errors import PrivilegeDenied
from shared.crm.port import ColumnPermission, FieldSyncMapping
from shared.domain.mailbox_settings import MailboxSettings
from shared.domain.model import Contact, FieldDirection, ItemKind, Task
from shared.store.records import Mailbox as StoredMailbox
from shared.store.records import utc_now
from shared.sync.field_rules import (
    FieldRules,
    FixedFieldDirection,
    check_field_directions,
    organization_directions,
)
from shared.sync.fieldmaps import field_map
from shared.sync.plan import (
    SECURED_SKIPPED,
    SECURED_UNREADABLE,
    CreateInCrm,
    CrmState,
    SecuredField,
    SyncPolicy,
    UpdateCrm,
    UpdateOutlook,
)
from tests.fakes.crm import FakeCrm
from tests.sync.world import Mailbox, World

CONTACT = field_map(ItemKind.CONTACT)


def test_directions_default_then_organization_then_mailbox() -> None:
    organization = {"jobtitle": FieldDirection.TO_CRM, "department": FieldDirection.NONE}
    mailbox = {"department": FieldDirection.TO_OUTLOOK}
    directions = CONTACT.directions(mailbox, organization)
    assert directions["telephone1"] is FieldDirection.TWO_WAY  # the documented default
    assert directions["jobtitle"] is FieldDirection.TO_CRM  # the organization's setting
    assert directions["department"] is FieldDirection.TO_OUTLOOK  # the mailbox's wins


def test_fixed_fields_keep_their_direction_whatever_the_settings_say() -> None:
    task_map = field_map(ItemKind.TASK)
    assert (
        task_map.directions({"statuscode": FieldDirection.NONE}, {"statuscode": FieldDirection.TO_CRM})[
            "statuscode"
        ]
        is FieldDirection.TWO_WAY
    )
    assert CONTACT.directions(organization={"firstname": FieldDirection.NONE})["firstname"] is (
        FieldDirection.TWO_WAY
    )


def test_organization_rows_map_aggregates_and_ignore_fixed_fields(caplog: pytest.LogCaptureFixture) -> None:
    rows = [
        FieldSyncMapping("contact", "address1", 2, ("address1_line1", "address1_city", "address1_line2")),
        FieldSyncMapping("contact", "jobtitle", 0, ("jobtitle",)),
        FieldSyncMapping("contact", "fullname", 1, ("firstname", "middlename", "lastname")),
        FieldSyncMapping("task", "subject", 1, ("subject",)),
        FieldSyncMapping("account", "name", 0, ("name",)),
    ]
    with caplog.at_level(logging.WARNING):
        result = organization_directions(rows)
    assert result[ItemKind.CONTACT] == {
        "address1_line1": FieldDirection.TO_CRM,
        "address1_city": FieldDirection.TO_CRM,
        "jobtitle": FieldDirection.NONE,
    }
    assert result[ItemKind.TASK] == {"subject": FieldDirection.TO_OUTLOOK}
    assert "contact.firstname has a fixed direction" in caplog.text


def test_mailbox_settings_may_not_change_a_fixed_field() -> None:
    check_field_directions(
        MailboxSettings(field_directions={ItemKind.CONTACT: {"jobtitle": FieldDirection.TO_CRM}})
    )
    with pytest.raises(FixedFieldDirection, match=r"contact\.firstname has a fixed direction \(two_way\)"):
        check_field_directions(
            MailboxSettings(field_directions={ItemKind.CONTACT: {"firstname": FieldDirection.TO_CRM}})
        )
    with pytest.raises(FixedFieldDirection, match=r"task\.statecode is not a synchronized field of its own"):
        check_field_directions(
            MailboxSettings(field_directions={ItemKind.TASK: {"statecode": FieldDirection.NONE}})
        )


class _CountingCrm(FakeCrm):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def field_sync_mappings(self, tables: object, *, caller: str | None) -> list[FieldSyncMapping]:
        self.reads += 1
        await asyncio.sleep(0)
        return await super().field_sync_mappings(list(tables), caller=caller)  # type: ignore[call-overload]


async def test_rules_are_read_once_per_period_not_per_job() -> None:
    crm = _CountingCrm()
    user = crm.add_user()
    crm.sync_mappings = [FieldSyncMapping("contact", "jobtitle", 2, ("jobtitle",))]
    crm.secure("contact", "governmentid")
    crm.secure("contact", "jobtitle", **{user.systemuserid.hex: ColumnPermission(read=True)})
    now = [0.0]
    rules = FieldRules(crm, ttl=300, clock=lambda: now[0])
    mailbox = StoredMailbox(
        mailbox_id="m",
        upn="u@contoso.example",
        crm_user_id=str(user.systemuserid),
        crm_caller_object_id=user.object_id,
        created_at=utc_now(),
        updated_at=utc_now(),
    )

    policies = await asyncio.gather(*(rules.policy(mailbox, ItemKind.CONTACT) for _ in range(20)))

    assert crm.reads == 1
    policy = policies[0]
    assert policy.organization == {"jobtitle": FieldDirection.TO_CRM}
    assert (policy.unreadable, policy.unwritable) == (
        frozenset({"governmentid"}),
        frozenset({"governmentid", "jobtitle"}),
    )
    now[0] = 299.0
    await rules.policy(mailbox, ItemKind.TASK)
    assert crm.reads == 1
    now[0] = 301.0
    await rules.policy(mailbox, ItemKind.CONTACT)
    assert crm.reads == 2


# --- the planner -------------------------------------------------------------------------------


def _synced(world: World, **fields: object) -> tuple[Mailbox, str, uuid.UUID]:
    mailbox = world.mailbox()
    item_id = world.outlook_create(mailbox, Contact.model_validate({"surname": "Lee", **fields}))
    world.sync(mailbox)
    return mailbox, item_id, mailbox.links[item_id].crm_id


def test_a_field_set_to_dynamics_by_the_organization_does_not_flow_back() -> None:
    world = World(ItemKind.CONTACT, SyncPolicy(organization={"jobtitle": FieldDirection.TO_CRM}))
    mailbox, item_id, record_id = _synced(world, job_title="Analyst", department="Sales")
    world.crm_edit(record_id, jobtitle="CRM title", department="CRM dept")

    world.sync(mailbox)

    item = mailbox.items[item_id].item
    assert isinstance(item, Contact)
    assert (item.job_title, item.department) == ("Analyst", "CRM dept")
    world.outlook_edit(mailbox, item_id, job_title="Outlook title")
    update = world.sync(mailbox)[0]
    assert isinstance(update, UpdateCrm)
    assert update.values == {"jobtitle": "Outlook title"}


def test_a_new_crm_record_does_not_bring_fields_that_flow_only_to_dynamics() -> None:
    world = World(ItemKind.TASK, SyncPolicy(organization={"description": FieldDirection.TO_CRM}))
    mailbox = world.mailbox()
    world.crm_create({"subject": "Call back", "description": "internal notes", "statuscode": 2})

    world.sync(mailbox)

    (entry,) = mailbox.items.values()
    assert isinstance(entry.item, Task)
    assert (entry.item.subject, entry.item.body) == ("Call back", None)
    assert world.sync(mailbox) == []  # nothing to do: the difference is the direction's


class _SecuredWorld(World):
    """Dataverse answers null for a secured column the user may not read."""

    def crm_state(self, mailbox: Mailbox, record_id: uuid.UUID) -> CrmState:
        state = super().crm_state(mailbox, record_id)
        if state.values is None:
            return state
        values = {c: None if c in self.policy.unreadable else v for c, v in state.values.items()}
        return dataclasses.replace(state, values=values)


def test_an_unreadable_secured_column_is_never_blanked_in_outlook() -> None:
    world = _SecuredWorld(ItemKind.CONTACT)
    mailbox, item_id, record_id = _synced(world, job_title="Analyst", department="Sales")
    world.policy = SyncPolicy(unreadable=frozenset({"jobtitle"}), unwritable=frozenset({"jobtitle"}))
    world.crm_edit(record_id, department="CRM dept")

    actions = world.sync(mailbox)

    item = mailbox.items[item_id].item
    assert isinstance(item, Contact)
    assert (item.job_title, item.department) == ("Analyst", "CRM dept")
    assert not any(isinstance(a, UpdateCrm) for a in actions)
    notes = [a for a in actions if isinstance(a, SecuredField)]
    assert [(n.column, n.reason) for n in notes] == [("jobtitle", SECURED_UNREADABLE)]
    assert world.records[record_id].values["jobtitle"] == "Analyst"


def test_an_unwritable_secured_column_is_skipped_and_the_rest_syncs() -> None:
    world = World(ItemKind.CONTACT)
    mailbox, item_id, record_id = _synced(world, job_title="Analyst", department="Sales")
    world.policy = SyncPolicy(unwritable=frozenset({"jobtitle"}))
    world.outlook_edit(mailbox, item_id, job_title="Lead", department="Research")

    actions = world.sync(mailbox)

    update = next(a for a in actions if isinstance(a, UpdateCrm))
    assert update.values == {"department": "Research"}
    notes = [a for a in actions if isinstance(a, SecuredField)]
    assert [(n.column, n.reason, n.record_id) for n in notes] == [("jobtitle", SECURED_SKIPPED, record_id)]
    assert not any(isinstance(a, UpdateOutlook) for a in actions)  # Outlook keeps what the user typed
    assert world.records[record_id].values["jobtitle"] == "Analyst"


def test_a_create_leaves_out_a_secured_column_the_user_may_not_set() -> None:
    world = World(ItemKind.CONTACT, SyncPolicy(uncreatable=frozenset({"jobtitle", "department"})))
    mailbox = world.mailbox()
    world.outlook_create(mailbox, Contact(surname="Lee", job_title="Analyst"))

    actions = world.sync(mailbox)

    create = next(a for a in actions if isinstance(a, CreateInCrm))
    assert "jobtitle" not in create.values
    assert create.values["department"] is None  # a null needs no create permission
    assert create.values["lastname"] == "Lee"
    assert [(a.column, a.reason) for a in actions if isinstance(a, SecuredField)] == [
        ("jobtitle", SECURED_SKIPPED)
    ]


class _NoSettingsCrm(FakeCrm):
    async def field_sync_mappings(self, tables: object, *, caller: str | None) -> list[FieldSyncMapping]:
        raise PrivilegeDenied("missing prvReadSyncAttributeMapping", status=403, code="0x80040220")


async def test_unreadable_organization_settings_fall_back_to_the_documented_defaults(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rules = FieldRules(_NoSettingsCrm())
    with caplog.at_level(logging.WARNING):
        assert await rules.organization() == {}
    assert "0x80040220" in caplog.text
